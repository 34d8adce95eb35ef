"""Helpers for tests of the HTTP edge: the gateway's own server (limits and all) in a
thread, the real gateway process with a descriptor limit, raw sockets, memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from gateway.config import ServerSettings
from gateway.server import GatewayServer, build_server
from tests.support.inprocess import ThreadedServer
from tests.support.server import GatewayProcess


class EdgeServer(ThreadedServer):
    """`build_server` (the gateway's protocol, limits and shutdown) run in a thread on
    a free loopback port. No signals reach it: `drain()` plays the shutdown."""

    def __init__(self, app: Any, settings: ServerSettings | None = None) -> None:
        self.settings = settings or ServerSettings()
        super().__init__(app)

    def build(self, app: Any) -> GatewayServer:
        return build_server(app, self.settings, "127.0.0.1", self.port)


class LimitedGateway(GatewayProcess):
    """The real gateway process, started with RLIMIT_NOFILE set to `nofile` (soft and
    hard) when given."""

    def __init__(self, *args: Any, nofile: int | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.nofile = nofile

    def start(self, wait_ready: bool = True, timeout: float = 120) -> Self:
        nofile = self.nofile

        def limit() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)),
                *("--host", "127.0.0.1", "--port", str(self.port)),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=Path(__file__).resolve().parents[2],
            preexec_fn=limit,
        )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)


def settings(**kw: Any) -> ServerSettings:
    return replace(ServerSettings(), **kw)


def tiny_config(model_path: Path, server: str = "", n_ctx: int = 256) -> str:
    return f"""
[server]
log_format = "json"
{server}

[[models]]
id = "tiny"
backend = "llama_cpp"
[models.options]
model_path = "{model_path}"
n_ctx = {n_ctx}
parallel = 2
threads = 1
"""


def connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, str]:
    """Everything the server sends until it closes: (bytes, "eof" | "reset" |
    "timeout")."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, "timeout"
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body, however the bytes arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def memory_kib(pid: int, field: str) -> int:
    """`VmRSS` or `VmHWM` (peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_memory(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
