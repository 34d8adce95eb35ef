"""The gateway process on a real socket, attacked the way issue 9 did: a huge request
head, connections that stay silent or trickle their head, and more silent connections
than the process has descriptors. Raw sockets, a real `python -m gateway` process
serving a tiny BLOOM model."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.server import FD_RESERVE
from tests.support.edge import (
    LimitedGateway,
    body_of,
    connect,
    memory_kib,
    read_response,
    read_until_closed,
    reset_peak_memory,
    status_of,
    tiny_config,
)

HEADER_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path
) -> Iterator[LimitedGateway]:
    folder = tmp_path_factory.mktemp("edge")
    config = folder / "gateway.toml"
    config.write_text(
        tiny_config(
            tiny_bloom_path,
            f"header_timeout_seconds = {HEADER_TIMEOUT}\nkeep_alive_seconds = 1\n",
        )
    )
    with LimitedGateway(config, folder / "gateway.log") as proc:
        yield proc


def head(extra: bytes = b"") -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra


def test_huge_header_gets_431_with_bounded_memory(gateway: LimitedGateway) -> None:
    reset_peak_memory(gateway.pid)
    before = memory_kib(gateway.pid, "VmHWM")
    sock = connect(gateway.port)
    sock.sendall(head(b"X-Big: "))
    chunk = b"a" * (1 << 20)
    sent = 0
    try:
        while sent < 64 << 20:  # a 64 MiB header value, unless the server stops us first
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response, _ = read_until_closed(sock, time.monotonic() + 10)
    sock.close()
    peak = memory_kib(gateway.pid, "VmHWM")
    assert sent < 64 << 20, "the server read the whole 64 MiB header"
    if response:  # the answer can be lost to the reset of a peer still sending
        assert status_of(response) == 431, response[:200]
        error = json.loads(body_of(response))["error"]
        assert error["code"] == "request_header_fields_too_large"
    assert peak - before < 16 * 1024, f"peak RSS grew by {peak - before} KiB"
    assert httpx.get(f"{gateway.base_url}/health").status_code == 200


def test_head_over_the_limit_sent_at_once_gets_431(gateway: LimitedGateway) -> None:
    sock = connect(gateway.port)
    sock.sendall(head(b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n"))
    sock.shutdown(socket.SHUT_WR)
    response, _ = read_until_closed(sock, time.monotonic() + 10)
    sock.close()
    assert status_of(response) == 431, response[:200]
    assert b"x-request-id: req_" in response.lower()
    assert b"65536 bytes" in body_of(response)


def test_head_under_the_limit_is_served(gateway: LimitedGateway) -> None:
    r = httpx.get(f"{gateway.base_url}/health", headers={"x-big": "a" * 60_000})
    assert r.status_code == 200


def test_silent_connection_is_closed(gateway: LimitedGateway) -> None:
    sock = connect(gateway.port)
    started = time.monotonic()
    data, how = read_until_closed(sock, started + HEADER_TIMEOUT + 10)
    sock.close()
    assert how in ("eof", "reset"), "a silent connection stayed open"
    assert data == b""  # nothing to answer: just closed
    assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9


def test_connection_trickling_its_head_is_closed_with_408(gateway: LimitedGateway) -> None:
    sock = connect(gateway.port)
    sock.sendall(head())
    deadline = time.monotonic() + HEADER_TIMEOUT + 10
    response, how = b"", "timeout"
    for byte in itertools.cycle(b"X-Slow: a\r\n"):  # header after header, one byte a time
        assert time.monotonic() < deadline, "a trickling head was never cut"
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        response, how = read_until_closed(sock, time.monotonic() + 0.2)
        if how != "timeout" or response:
            break
    if how == "timeout":
        more, how = read_until_closed(sock, time.monotonic() + 10)
        response += more
    sock.close()
    assert status_of(response) == 408, response[:200]
    assert json.loads(body_of(response))["error"]["code"] == "request_timeout"


def test_keep_alive_connection_is_reused_then_closed_when_idle(gateway: LimitedGateway) -> None:
    sock = connect(gateway.port)
    for _ in range(2):
        sock.sendall(head(b"\r\n"))
        response = read_response(sock)
        assert status_of(response) == 200, response[:200]
    _, how = read_until_closed(sock, time.monotonic() + 30)  # keep_alive_seconds = 1
    sock.close()
    assert how in ("eof", "reset")


@pytest.fixture(scope="module")
def starved(
    tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path
) -> Iterator[LimitedGateway]:
    """A gateway allowed 160 descriptors, with a header timeout far longer than the test:
    only the connection limit can save it."""
    folder = tmp_path_factory.mktemp("edge-fd")
    config = folder / "gateway.toml"
    config.write_text(tiny_config(tiny_bloom_path, "header_timeout_seconds = 600\n"))
    with LimitedGateway(config, folder / "gateway.log", nofile=160) as proc:
        yield proc


def test_silent_connections_do_not_starve_a_new_client(starved: LimitedGateway) -> None:
    silent = [connect(starved.port) for _ in range(200)]
    try:
        r = httpx.get(f"{starved.base_url}/health", timeout=20)
        assert r.status_code == 200
        closed = 0
        for sock in silent:
            sock.settimeout(0.01)
            try:
                closed += sock.recv(1, socket.MSG_PEEK) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        # The oldest idle connections were evicted to make room; the rest still wait.
        assert closed >= 200 - (160 - FD_RESERVE), closed
    finally:
        for sock in silent:
            sock.close()
    assert "max_connections lowered to fit the descriptor limit" in starved.logs()
