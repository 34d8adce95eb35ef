"""A test-only backend plugin, installed for a gateway subprocess through PYTHONPATH (an
entry point in a `.dist-info` folder, as a real installed plugin has): `misbehaving`
does what a broken native engine does, in whatever process loads it.

Options: `on_load` = "segfault" (SIGSEGV itself while loading), "hang" (block its event
loop, as a deadlocked engine holding the GIL would), "exit" (exit 3), or "ok";
`engine_fails_after` = N: its health turns `failed` after N generations. It
defaults to isolation "process", as the ctransformers backend does."""

from __future__ import annotations

from pathlib import Path

MODULE = """
import os, signal, time
from backends.base import (
    Backend, Capabilities, Finished, Health, ModelInfo, TextDelta, Usage,
)
from backends.errors import ConfigError


class Misbehaving(Backend):
    name = "misbehaving"
    default_isolation = "process"

    def __init__(self, model_id, on_load, engine_fails_after):
        self.model_id, self.on_load = model_id, on_load
        self.engine_fails_after, self.served = engine_fails_after, 0

    @classmethod
    def from_config(cls, model_id, options, base_dir):
        on_load = options.get("on_load", "ok")
        if on_load not in ("segfault", "hang", "exit", "ok"):
            raise ConfigError("must be segfault, hang, exit or ok", "on_load")
        return cls(model_id, on_load, options.get("engine_fails_after"))

    async def load(self):
        if self.on_load == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif self.on_load == "hang":
            while True:
                time.sleep(1)
        elif self.on_load == "exit":
            os._exit(3)

    @property
    def capabilities(self):
        return Capabilities()

    def info(self):
        return ModelInfo(self.model_id, self.name, self.capabilities, {"pid": os.getpid()})

    def health(self):
        if self.engine_fails_after is not None and self.served >= self.engine_fails_after:
            return Health("failed", "the engine stopped")
        return Health()

    async def generate(self, request):
        self.served += 1
        yield TextDelta("ok")
        yield Finished("stop", Usage(1, 1))

    async def aclose(self):
        pass
"""


def install_plugin(folder: Path) -> Path:
    """Write the plugin under `folder`; put the returned path on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "misbehaving_backend.py").write_text(MODULE)
    meta = folder / "misbehaving_backend-0.1.dist-info"
    meta.mkdir(exist_ok=True)
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: misbehaving-backend\nVersion: 0.1\n"
    )
    (meta / "entry_points.txt").write_text(
        "[gateway.backends]\nmisbehaving = misbehaving_backend:Misbehaving\n"
    )
    return folder
