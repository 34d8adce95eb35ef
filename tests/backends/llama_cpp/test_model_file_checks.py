"""A model file is checked before llama.cpp sees it, and a failed start says why.

A GGUF whose metadata is absurd (block_count 10^9 in a 2 MB file) used to abort the
whole process inside llama.cpp (exit 134, a backtrace) after the server was already
listening; now the gateway reads the header itself and exits with status 2 and one
clear line. What llama.cpp itself refuses (an architecture it does not know) is
reported with llama.cpp's own reason, and a chat template with a syntax error says
where, not just `InvalidRequest`."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backends.llama_cpp import LlamaCppBackend
from backends.llama_cpp.gguf_check import GGUFError, read_gguf
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.support.ggufgen import write_bloom
from tests.support.inprocess import asgi_client
from tests.support.server import GatewayProcess, free_port, model_config

REPO = Path(__file__).resolve().parents[3]
BROKEN_TEMPLATE = "{% for m in messages %}\n{{ m.content }}\n{{ m.role }\n{% endfor %}"


def value_offset(data: bytes, key: str) -> int:
    """Where the value of the key/value pair `key` starts (after its type)."""
    raw = key.encode()
    at = data.index(struct.pack("<Q", len(raw)) + raw)
    return at + 8 + len(raw) + 4


def corrupt(source: Path, target: Path, how: str) -> Path:
    data = bytearray(source.read_bytes())
    if how == "block_count":
        struct.pack_into("<I", data, value_offset(data, "bloom.block_count"), 10**9)
    elif how == "embedding_length":
        struct.pack_into("<I", data, value_offset(data, "bloom.embedding_length"), 2**31)
    elif how == "kv_count":
        struct.pack_into("<Q", data, 16, 2**60)
    elif how == "tensor_count":
        struct.pack_into("<Q", data, 8, 2**40)
    elif how == "not_gguf":
        data[:4] = b"GGML"
    elif how == "truncated":
        del data[len(data) // 2 :]
    elif how == "architecture":  # same length, so the rest of the file still parses
        at = value_offset(data, "general.architecture") + 8
        assert data[at : at + 5] == b"bloom"
        data[at : at + 5] = b"bl00m"
    target.write_bytes(bytes(data))
    return target


def serve(config: Path, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run `gateway serve` until it exits by itself: (status, output, seconds)."""
    started = time.monotonic()
    port = str(free_port())
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "GATEWAY_LOG_FORMAT": "json", **(env or {})},
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


CORRUPTIONS = {
    "block_count": "bloom.block_count is 1000000000, but the file holds",
    "embedding_length": "bloom.embedding_length is 2147483648",
    "kv_count": "key/value pairs cannot fit in the file",
    "tensor_count": "tensors cannot fit in the file",
    "not_gguf": "not a GGUF file",
    "truncated": "truncated",
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupt_header_is_refused_before_llama_cpp(
    how: str, tiny_bloom_path: Path, tmp_path: Path
) -> None:
    bad = corrupt(tiny_bloom_path, tmp_path / f"{how}.gguf", how)
    with pytest.raises(GGUFError, match=CORRUPTIONS[how]):
        read_gguf(bad)


def test_real_files_pass(tiny_bloom_path: Path, smollm2_path: Path, tmp_path: Path) -> None:
    smol = read_gguf(smollm2_path)
    assert smol.architecture == "llama" and smol.metadata["llama.block_count"] == 30
    assert smol.chat_template and "im_start" in smol.chat_template
    bloom = read_gguf(tiny_bloom_path)
    assert bloom.architecture == "bloom" and len(bloom.tensors) == 29
    fim = read_gguf(write_bloom(tmp_path / "fim.gguf", fim=True, q8_0=True))
    assert fim.metadata["tokenizer.ggml.fim_pre_token_id"] == 4


def test_absurd_block_count_is_a_clean_startup_error(tiny_bloom_path: Path, tmp_path: Path) -> None:
    bad = corrupt(tiny_bloom_path, tmp_path / "blocks.gguf", "block_count")
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("m", {"model_path": str(bad)}))
    status, output, _ = serve(config)
    assert status == 2, output  # not 134 (abort) after listening
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "options.model_path" in lines[0] and "block_count is 1000000000" in lines[0]
    assert "GGML_ASSERT" not in output and "Traceback" not in output


def test_unknown_architecture_says_what_llama_cpp_said(
    tiny_bloom_path: Path, tmp_path: Path
) -> None:
    bad = corrupt(tiny_bloom_path, tmp_path / "arch.gguf", "architecture")
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("m", {"model_path": str(bad)}))
    status, output, _ = serve(config)
    assert status == 1, output
    assert "unknown model architecture: 'bl00m'" in output
    assert "failed to load" in output


def test_load_failure_reaches_clients_without_paths(tiny_bloom_path: Path, tmp_path: Path) -> None:
    """While the failed load shuts the server down, /ready and requests say why, with
    the file's name but not its folder."""
    bad = corrupt(tiny_bloom_path, tmp_path / "arch.gguf", "architecture")
    backend = LlamaCppBackend.from_config("m", {"model_path": str(bad)}, tmp_path)
    failures: list[str] = []
    app = create_app(
        GatewayConfig(ServerSettings(), (), Path("inline.toml")),
        ModelRegistry([ServedModel("m", backend)]),
        on_fatal=failures.append,
    )

    async def main() -> None:
        async with asgi_client(app) as client:
            deadline = time.monotonic() + 30
            while not failures:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            r = await client.post("/v1/completions", json={"model": "m", "prompt": "x"})
            assert r.status_code == 503
            message = r.json()["error"]["message"]
            assert "unknown model architecture: 'bl00m'" in message and "arch.gguf" in message
            assert str(tmp_path) not in message

    asyncio.run(main())


def test_template_syntax_error_in_config(tiny_bloom_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    (tmp_path / "template.jinja").write_text(BROKEN_TEMPLATE)
    config.write_text(
        model_config(
            "m", {"model_path": str(tiny_bloom_path), "chat_template_file": "template.jinja"}
        )
    )
    status, output, _ = serve(config)
    assert status == 2, output
    assert "options.chat_template: the chat template is not valid Jinja" in output
    assert "unexpected '}' at line 3" in output
    assert "InvalidRequest" not in output


def test_template_syntax_error_in_the_gguf(tmp_path: Path) -> None:
    model = write_bloom(tmp_path / "templated.gguf", chat_template=BROKEN_TEMPLATE)
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("m", {"model_path": str(model)}))
    status, output, _ = serve(config)
    assert status == 2, output
    assert "the chat template inside templated.gguf is not valid Jinja" in output
    assert "unexpected '}' at line 3" in output and "set chat_template" in output


def test_a_good_file_still_serves(tiny_bloom_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("m", {"model_path": str(tiny_bloom_path), "n_ctx": 128}))
    with GatewayProcess(config, tmp_path / "log") as gateway:
        r = httpx.post(
            f"{gateway.base_url}/v1/completions",
            json={"model": "m", "prompt": "hi", "max_tokens": 2},
        )
        assert r.status_code == 200
