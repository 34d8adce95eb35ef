"""Backends are plugins: a third-party package that registers in the `gateway.backends`
entry-point group serves a model without any change to the gateway's code.

The package is written to a temporary folder, built into a wheel there (by hand: a
wheel is a zip with a dist-info folder, so no build backend or network is needed),
installed with pip into its own target folder, and put on the gateway's PYTHONPATH.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import openai

from backends.registry import available_backends
from tests.backends.openai_http.support import gateway_config
from tests.support.server import GatewayProcess

PLUGIN = '''
"""A third-party backend: it shouts the prompt back, one word per event."""

from pathlib import Path

from backends.base import (Backend, Capabilities, Finished, ModelInfo, TextDelta, Usage)
from backends.errors import ConfigError


class ShoutBackend(Backend):
    name = "shout"

    def __init__(self, model_id, suffix):
        self.model_id, self.suffix = model_id, suffix

    @classmethod
    def from_config(cls, model_id, options, base_dir: Path):
        suffix = options.get("suffix", "!")
        if not isinstance(suffix, str):
            raise ConfigError("suffix must be a string", "suffix")
        return cls(model_id, suffix)

    async def load(self):
        pass

    @property
    def capabilities(self):
        return Capabilities(streaming=True)

    def info(self):
        return ModelInfo(self.model_id, self.name, self.capabilities, {"suffix": self.suffix})

    async def generate(self, request):
        words = str(request.prompt).upper().split()
        for i, word in enumerate(words):
            yield TextDelta((" " if i else "") + word)
        yield TextDelta(self.suffix)
        yield Finished("stop", Usage(len(words), len(words) + 1))

    async def aclose(self):
        pass
'''


def build_wheel(folder: Path) -> Path:
    name, version = "gateway_shout", "1.0"
    files = {
        f"{name}/__init__.py": PLUGIN.encode(),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: gateway-shout\nVersion: {version}\n"
        ).encode(),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{name}-{version}.dist-info/entry_points.txt": (
            f"[gateway.backends]\nshout = {name}:ShoutBackend\n"
        ).encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def test_builtins_register_through_entry_points() -> None:
    assert {"llama_cpp", "openai_http"} <= set(available_backends())


def test_an_installed_plugin_serves_a_model(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--disable-pip-version-check", "--target", str(site), str(wheel)],
        check=True,
    )
    assert (site / "gateway_shout-1.0.dist-info" / "entry_points.txt").exists()
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_config({"loud": ("shout", {"suffix": "!!"})}))
    with GatewayProcess(config, tmp_path / "gateway.log", env={"PYTHONPATH": str(site)}) as gw:
        client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
        result = client.completions.create(model="loud", prompt="hello plugin world")
        assert result.choices[0].text == "HELLO PLUGIN WORLD!!"
        assert result.usage is not None and result.usage.completion_tokens == 4
        stream = client.completions.create(model="loud", prompt="again", stream=True)
        assert "".join(c.choices[0].text for c in stream) == "AGAIN!!"
        backends = httpx.get(f"{gw.base_url}/v1/backends").json()["data"]
        assert backends[0]["backend"] == "shout"
        assert backends[0]["details"] == {"suffix": "!!"}
