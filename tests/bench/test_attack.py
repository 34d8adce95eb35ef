"""The hostile pieces bench/attack.py is built from do what they claim: the upstream
misbehaves as each mode says, and the crafted GGUF declares a billion layers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.attacks_own import write_crafted_gguf
from tests.support.ggufgen import write_bloom
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
SIZE = 1 << 20


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.attack_upstream", str(port), str(SIZE)], cwd=ROOT
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "upstream did not start"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def _post(url: str, mode: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={"model": mode, "prompt": "x"}, timeout=10)


def test_upstream_looks_healthy_to_probes(upstream: str) -> None:
    r = httpx.get(f"{upstream}/v1/models", timeout=10)
    assert r.status_code == 200 and r.json()["object"] == "list"


def test_upstream_modes(upstream: str) -> None:
    secret = _post(upstream, "secret")
    assert secret.status_code == 400 and "hunter2" in secret.text
    assert _post(upstream, "retry-inf").headers["retry-after"] == "inf"
    huge = _post(upstream, "huge")
    assert huge.status_code == 200 and len(huge.content) == SIZE
    assert b"\xff\xfe" in _post(upstream, "badutf8").content
    assert json.loads(b"1e400") == float("inf")  # what usage-inf's number parses to
    assert b'"prompt_tokens":1e400' in _post(upstream, "usage-inf").content


def test_upstream_pings_forever(upstream: str) -> None:
    with httpx.stream(
        "POST", f"{upstream}/v1/completions", json={"model": "ping"}, timeout=10
    ) as r:
        lines = r.iter_lines()
        pings = [next(lines) for _ in range(5)]
    assert [p for p in pings if p] == [": ping"] * 3


def test_crafted_gguf_declares_a_billion_layers(tmp_path: Path) -> None:
    from gguf import GGUFReader

    crafted = write_crafted_gguf(write_bloom(tmp_path / "b.gguf"), tmp_path / "c.gguf")
    field = GGUFReader(str(crafted)).fields["bloom.block_count"]
    assert int(field.parts[field.data[0]][0]) == 10**9
