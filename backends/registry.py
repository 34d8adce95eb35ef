"""Find backend classes by name through the `gateway.backends` entry-point group.

The built-in backends register there too (see pyproject.toml), so a third-party
package adds one just by being installed.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from backends.base import Backend
from backends.errors import ConfigError

ENTRY_POINT_GROUP = "gateway.backends"


def available_backends() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_backend_class(name: str) -> type[Backend]:
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(available_backends()) or "none"
        raise ConfigError(f"unknown backend {name!r}; installed backends: {known}", "backend")
    try:
        cls = matches[0].load()
    except Exception as exc:  # a broken plugin must not crash startup with a traceback
        raise ConfigError(
            f"backend {name!r} is installed but failed to import: {type(exc).__name__}: {exc}",
            "backend",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(
            f"entry point {name!r} does not name a subclass of backends.base.Backend", "backend"
        )
    return cls
