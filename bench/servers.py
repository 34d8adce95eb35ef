"""The HTTP contenders as child processes on loopback: this gateway, llama-cpp-python's
own server (`python -m llama_cpp.server`) and llama.cpp's C++ `llama-server`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
N_CTX = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log: Path) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._argv = argv
        self._ready = ready_path
        self._log_path = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 180) -> ServerProcess:
        env = {**os.environ, "GATEWAY_LOG_FORMAT": "json"}
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{tail}")
            try:
                if httpx.get(self.base_url + self._ready, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout} s")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gateway(
    model: Path,
    workdir: Path,
    parallel: int,
    threads: int,
    isolation: str = "none",
    n_ctx: int = N_CTX,
    extra: str = "",
    tag: str = "",
) -> ServerProcess:
    """The gateway serving `model` as "bench"; with isolation "process", in a worker.
    `extra` is more TOML for the model's options table."""
    name = f"gateway-p{parallel}" + ("-process" if isolation == "process" else "") + tag
    config = workdir / f"{name}.toml"
    config.write_text(
        '[server]\nlog_format = "json"\n\n[[models]]\nid = "bench"\n'
        f'backend = "llama_cpp"\nisolation = "{isolation}"\n\n[models.options]\n'
        f'model_path = "{model}"\nn_ctx = {n_ctx}\nparallel = {parallel}\n'
        f"threads = {threads}\nmax_queue = 64\n{extra}"
    )
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return ServerProcess(
        f"gateway(parallel={parallel}, isolation={isolation})",
        argv,
        port,
        "/ready",
        workdir / f"{name}.log",
    )


def llama_cpp_server(
    model: Path, workdir: Path, threads: int, interrupt: bool = True
) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        "bench",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(N_CTX),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
    ]
    if not interrupt:
        argv += ["--interrupt_requests", "False"]
    tag = "default" if interrupt else "no-interrupt"
    return ServerProcess(
        f"llama_cpp.server({tag})", argv, port, "/v1/models", workdir / f"llama-server-{tag}.log"
    )


def llama_server(
    binary: Path, model: Path, workdir: Path, parallel: int, n_ctx: int, threads: int
) -> ServerProcess:
    """llama.cpp's own server: `parallel` slots of `n_ctx` tokens each, `threads` decode
    threads, the model served as "bench". Everything else is llama-server's default."""
    port = free_port()
    argv = [
        str(binary),
        "--model", str(model),
        "--alias", "bench",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(parallel),
        "--ctx-size", str(parallel * n_ctx),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--no-webui",
    ]  # fmt: skip
    return ServerProcess(
        f"llama-server(np={parallel})", argv, port, "/health", workdir / "llama-server.log"
    )


def backend_details(base_url: str) -> dict[str, object]:
    data = httpx.get(f"{base_url}/v1/backends", timeout=10).json()["data"][0]
    return {**data["details"], "stats": data["stats"]}
