"""What bench/attack.py measures with: a gateway process it can restart, a /health
probe that tolerates a gateway that stops answering, RSS, and running one attack
under a deadline."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.servers import ROOT, free_port


@dataclass
class Result:
    name: str
    expect: str
    status: str = ""
    seconds: float = 0.0
    health_p99_ms: float | None = None
    rss_before_mib: float | None = None
    rss_after_mib: float | None = None
    ok: bool = False
    note: str = ""

    def json(self) -> dict[str, Any]:
        return asdict(self)


class Gateway:
    """`python -m gateway serve` on a free loopback port, with its log in `workdir`."""

    def __init__(self, name: str, config: str, workdir: Path) -> None:
        self.name = name
        self.config = workdir / f"{name}.toml"
        self.config.write_text(config)
        self.log = workdir / f"{name}.log"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> int | None:
        """Start and wait until ready; returns None when ready, else the exit code
        (or -999 if it neither became ready nor exited within `timeout`)."""
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(self.config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        env = {**os.environ, "GATEWAY_LOG_FORMAT": "json"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return -999

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.base_url}/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_mib(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def log_tail(self, chars: int = 400) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def why_it_exited(self) -> str:
        """The last error line of the log, with this run's folder left out."""
        lines = self.log_tail(20_000).splitlines()
        wanted = [x for x in lines if '"level": "error"' in x or x.startswith("gateway:")]
        line = (wanted or lines or [""])[-1]
        return line.replace(str(self.log.parent) + "/", "")[:200]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _probe_loop(url: str, ready: Any, stop: Any, out: Any) -> None:
    latencies: list[float] = []
    with httpx.Client(timeout=2) as client:
        with contextlib.suppress(httpx.HTTPError):
            client.get(url)  # a warm connection, not counted
        ready.set()
        while True:  # at least one sample, however short the attack
            t0 = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                client.get(url)
            latencies.append((time.perf_counter() - t0) * 1000)
            if stop.wait(0.02):
                break
    out.send(latencies)


class HealthProbe:
    """GET /health every 20 ms from a process of its own (a thread of this process
    would wait for the GIL while the attack builds or sends a large body here, and the
    gateway would be blamed for it); a request that fails or takes longer than 2 s
    counts with the time it took."""

    def __init__(self, base_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self._receive, send = ctx.Pipe(duplex=False)
        args = (f"{base_url}/health", self._ready, self._stop, send)
        self._process = ctx.Process(target=_probe_loop, args=args, daemon=True)
        self.latencies_ms: list[float] = []

    def p99(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)

    def __enter__(self) -> HealthProbe:
        self._process.start()
        self._ready.wait(30)  # probing has begun before the attack does
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._receive.poll(10):
            self.latencies_ms = self._receive.recv()
        self._process.join(5)


def measured(
    result: Result, gateway: Gateway, timeout: float, attack: Callable[[], tuple[str, bool, str]]
) -> Result:
    """Run `attack` (which returns status, ok, note) in a thread under `timeout`, with
    the health probe running and RSS taken before and after."""
    result.rss_before_mib = gateway.rss_mib()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = attack()
        except Exception as exc:  # the report says what went wrong; the run goes on
            box["out"] = (f"client error {type(exc).__name__}", False, str(exc)[:200])

    with HealthProbe(gateway.base_url) as probe:
        t0 = time.perf_counter()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout)
        result.seconds = round(time.perf_counter() - t0, 2)
    result.health_p99_ms = probe.p99()
    result.rss_after_mib = gateway.rss_mib()
    if "out" in box:
        result.status, result.ok, result.note = box["out"]
    else:
        result.status, result.ok, result.note = "timeout", False, f"no answer in {timeout:g} s"
    if result.health_p99_ms is not None and result.health_p99_ms >= 50:
        result.ok = False
        result.note = (result.note + "; /health p99 >= 50 ms").lstrip("; ")
    return result
