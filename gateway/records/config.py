"""The `[store]` section: where experiment records and feedback go. Without it the
gateway records nothing and serves no /v1/feedback (it works exactly as before)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KNOWN = ("url", "record_all", "retention_days", "queue_size", "batch_size", "write_timeout_seconds")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str  # sqlite:///relative/or/absolute.db (relative to the config file) | postgresql://...
    record_all: bool = False  # a record for every generation request, not only experiments
    retention_days: float | None = None  # records and their feedback older than this go
    queue_size: int = 10_000  # records waiting to be written; beyond it they are dropped
    batch_size: int = 500
    write_timeout_seconds: float = 10.0  # a batch not written by then is dropped

    @property
    def kind(self) -> str:
        return "sqlite" if self.url.startswith("sqlite:") else "postgresql"


def sqlite_path(url: str, base_dir: Path) -> Path:
    """`sqlite:///data/gateway.db` is `data/gateway.db` next to the config file;
    `sqlite:////var/lib/gateway.db` is absolute."""
    rest = url[len("sqlite:///"):]
    path = Path(rest)
    return path if path.is_absolute() else base_dir / path


def parse_store(raw: Any, fail: Callable[[str, str], Exception]) -> StoreSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("store", "must be a table")
    extra = sorted(set(raw) - set(KNOWN))
    if extra:
        raise fail(f"store.{extra[0]}", f"unknown key (known: {', '.join(KNOWN)})")
    url = raw.get("url", "sqlite:///data/gateway.db")
    if not isinstance(url, str) or not (
        (url.startswith("sqlite:///") and len(url) > len("sqlite:///"))
        or url.startswith(("postgresql://", "postgres://"))
    ):
        raise fail(
            "store.url",
            'must be "sqlite:///PATH" (relative to the config file) or "postgresql://..."',
        )
    values: dict[str, Any] = {"url": url}
    if "record_all" in raw:
        if not isinstance(raw["record_all"], bool):
            raise fail("store.record_all", "must be true or false")
        values["record_all"] = raw["record_all"]
    if "retention_days" in raw:
        days = raw["retention_days"]
        if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
            raise fail("store.retention_days", "must be a positive number of days")
        values["retention_days"] = float(days)
    for key, low, high in (("queue_size", 1, 10_000_000), ("batch_size", 1, 100_000)):
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise fail(f"store.{key}", f"must be an integer from {low} to {high}")
            values[key] = value
    if "write_timeout_seconds" in raw:
        value = raw["write_timeout_seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            raise fail("store.write_timeout_seconds", "must be a number of seconds in (0, 3600]")
        values["write_timeout_seconds"] = float(value)
    return StoreSettings(**values)
