"""How much latency and throughput a proxy costs in front of an instant upstream.

In one run: a minimal upstream on loopback (bench/overhead_upstream.py) that streams a
fixed 16-chunk completion, called directly, through this gateway (openai_http backend),
through the same gateway process by a route with a 2-variant experiment (the routing
layer's cost, printed as ratios to the plain model path) and through LiteLLM's proxy
configured for the same upstream, at concurrency 1 and 32.
Reports added latency (TTFT and total, p50/p99) over the direct call, requests/s, and
the ratios against LiteLLM; writes JSON to bench/results/ (quick runs:
bench/results/quick/, untracked).

    .venv/bin/python -m bench.overhead --quick          # under a minute
    .venv/bin/python -m bench.overhead                  # under five minutes
    .venv/bin/python -m bench.overhead --profile        # also py-spy the gateway at c=32
    .venv/bin/python -m bench.overhead --no-litellm     # gateway vs direct only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.paths import results_dir

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-bench-master"
CONCURRENCIES = (1, 32)


def log(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    model: str = "fake"

    def wait(self, path: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + path, headers=self.headers, timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not start in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    out = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **(env or {})})


def start_upstream(workdir: Path) -> Server:
    port = free_port()
    proc = spawn("upstream", [sys.executable, "-m", "bench.overhead_upstream", "--port",
                              str(port)], workdir)
    server = Server("upstream", proc, f"http://127.0.0.1:{port}")
    server.wait("/v1/models")
    return server


def start_gateway(workdir: Path, upstream: Server) -> Server:
    """The plain model `fake`, and the route `fake-ab`: a 50/50 experiment whose two
    variants both name `fake` (shadow off), so that the one difference between the two
    paths is the routing layer (two models would also split the upstream connection
    pool, which alone changes the numbers at c=32)."""
    port = free_port()
    config = workdir / "gateway.toml"
    config.write_text(
        '[server]\nlog_format = "json"\n\n[[models]]\nid = "fake"\nbackend = "openai_http"\n'
        f'[models.options]\nbase_url = "{upstream.base_url}"\n'
        '\n[[routes]]\nid = "fake-ab"\n[routes.experiment]\nname = "ab"\nunit = "request"\n'
        'variants = [{name = "a", model = "fake", weight = 50},'
        ' {name = "b", model = "fake", weight = 50}]\n'
    )
    proc = spawn("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port)], workdir)
    server = Server("gateway", proc, f"http://127.0.0.1:{port}")
    server.wait("/ready")
    return server


def start_litellm(workdir: Path, upstream: Server) -> Server:
    exe = shutil.which("litellm", path=str(Path(sys.executable).parent))
    if exe is None:
        raise RuntimeError("litellm is not installed: GATEWAY_EXTRAS=test,bench "
                           "python3 .ci/dev.py run true")
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        "      model: text-completion-openai/fake\n"
        f"      api_base: {upstream.base_url}/v1\n"
        "      api_key: sk-none\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY_DISABLED": "true",
           "LITELLM_LOG": "ERROR"}
    proc = spawn("litellm", [exe, "--config", str(config), "--host", "127.0.0.1", "--port",
                             str(port), "--num_workers", "1"], workdir, env)
    server = Server("litellm", proc, f"http://127.0.0.1:{port}",
                    {"authorization": f"Bearer {MASTER_KEY}"})
    server.wait("/health/liveliness", timeout=180)
    return server


# -- load ------------------------------------------------------------------------------


@dataclass
class Sample:
    ttft: float
    total: float


async def one_request(client: httpx.AsyncClient, server: Server) -> Sample:
    body = {"model": server.model, "prompt": "Say something", "max_tokens": 16,
            "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    ttft = None
    async with client.stream("POST", f"{server.base_url}/v1/completions", json=body,
                             headers=server.headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}: HTTP {response.status_code} "
                               f"{(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if ttft is None and line.startswith("data: {") and '"text":""' not in line.replace(
                    " ", ""):
                ttft = time.perf_counter() - t0
            if line == "data: [DONE]":
                break
    total = time.perf_counter() - t0
    return Sample(ttft if ttft is not None else total, total)


async def run_load(server: Server, concurrency: int, requests: int, seconds: float
                   ) -> dict[str, Any]:
    """`concurrency` clients send streams back to back until `requests` are done or
    `seconds` have passed (whichever first)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as client:
        for _ in range(min(3, concurrency) + 2):  # warm connections and caches
            await one_request(client, server)
        samples: list[Sample] = []
        errors: Counter[str] = Counter()
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker() -> None:
            while len(samples) + sum(errors.values()) < requests and time.perf_counter() < deadline:
                try:
                    samples.append(await one_request(client, server))
                except Exception as exc:
                    errors[str(exc)[:120]] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return summarise(samples, elapsed, errors)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(samples: list[Sample], elapsed: float, errors: Counter[str]) -> dict[str, Any]:
    ttft = [s.ttft * 1000 for s in samples]
    total = [s.total * 1000 for s in samples]
    return {
        "requests": len(samples),
        "errors": dict(errors),
        "seconds": round(elapsed, 2),
        "rps": round(len(samples) / elapsed, 1) if elapsed else None,
        "ttft_ms": {"p50": round(pct(ttft, 0.5), 2), "p99": round(pct(ttft, 0.99), 2)},
        "total_ms": {"p50": round(pct(total, 0.5), 2), "p99": round(pct(total, 0.99), 2)},
    }


# -- profile ---------------------------------------------------------------------------


def profile_during(
    server: Server, workdir: Path, seconds: float, load: Any, out: Path
) -> dict[str, Any]:
    """py-spy the server's process while `load` runs; the hottest frames by own time."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        return {"error": "py-spy is not installed"}
    raw = workdir / "gateway.pyspy.txt"
    spy = subprocess.Popen([exe, "record", "--pid", str(server.proc.pid), "--format", "raw",
                            "--rate", "250", "--duration", str(int(seconds) + 1), "--output",
                            str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    result = asyncio.run(load())
    spy.wait(60)
    if not raw.exists():
        return {"error": "py-spy wrote nothing (ptrace not permitted?)"}
    own: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        by_area[area_of(frames)] += n
    shutil.copy(raw, out / "overhead-gateway.pyspy.txt")
    return {
        "samples": total,
        "load": result,
        "by_area_pct": {k: round(100 * v / total, 1) for k, v in by_area.most_common()},
        "top_own_pct": {k: round(100 * v / total, 1) for k, v in own.most_common(15)},
    }


AREAS = (
    ("backends/openai_http", "openai_http backend"),
    ("httpcore", "httpx/httpcore (upstream client)"),
    ("httpx", "httpx/httpcore (upstream client)"),
    ("sse_starlette", "sse-starlette (SSE out)"),
    ("gateway/", "gateway (wire, handlers, middleware)"),
    ("structlog", "structlog (access log)"),
    ("starlette", "starlette (routing, responses)"),
    ("uvicorn", "uvicorn (HTTP server)"),
    ("json", "json"),
    ("asyncio", "asyncio event loop"),
)


def area_of(frames: list[str]) -> str:
    """The innermost frame that belongs to a known area."""
    for frame in reversed(frames):
        for needle, name in AREAS:
            if needle in frame:
                return name
    return "other"


# -- report ----------------------------------------------------------------------------


def added(target: dict[str, Any], direct: dict[str, Any]) -> dict[str, float]:
    return {f"{m}_{q}": round(target[f"{m}_ms"][q] - direct[f"{m}_ms"][q], 2)
            for m in ("ttft", "total") for q in ("p50", "p99")}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 1)


def report(results: dict[str, Any]) -> str:
    lines = ["| c | target | req/s | TTFT p50 | TTFT p99 | total p50 | total p99 | "
             "+TTFT p50 | +TTFT p99 | +total p50 | +total p99 | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, row in results["runs"].items():
        for name, r in row.items():
            a = r.get("added", {})
            lines.append(
                f"| {c} | {name} | {r['rps']} | {r['ttft_ms']['p50']} | {r['ttft_ms']['p99']} | "
                f"{r['total_ms']['p50']} | {r['total_ms']['p99']} | {a.get('ttft_p50', '')} | "
                f"{a.get('ttft_p99', '')} | {a.get('total_p50', '')} | {a.get('total_p99', '')} "
                f"| {sum(r['errors'].values())} |")
    if results.get("ratios"):
        lines += ["", "| c | LiteLLM +TTFT p50 / ours | LiteLLM +total p50 / ours | "
                  "our req/s / LiteLLM's | meets targets (>= 10x) |", "|---|---|---|---|---|"]
        for c, r in results["ratios"].items():
            lines.append(f"| {c} | {r['added_ttft_p50']} | {r['added_total_p50']} | "
                         f"{r['rps']} | {r['meets_targets']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway at c=32")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else 15.0
    serial = 100 if args.quick else 400
    workdir = Path(tempfile.mkdtemp(prefix="overhead-"))
    servers: list[Server] = []
    results: dict[str, Any] = {"quick": args.quick, "chunks": 16, "runs": {}, "ratios": {}}
    try:
        upstream = start_upstream(workdir)
        servers.append(upstream)
        gateway = start_gateway(workdir, upstream)
        servers += [gateway, Server("gateway-route", gateway.proc, gateway.base_url,
                                    model="fake-ab")]
        if not args.no_litellm:
            log("starting LiteLLM's proxy (slow to import)")
            servers.append(start_litellm(workdir, upstream))
        for c in CONCURRENCIES:
            row: dict[str, Any] = {}
            for server in servers:
                # LiteLLM manages about 16 requests/s: fewer serial requests keep runs short
                n = serial if server.name != "litellm" else serial // 4
                log(f"c={c}: {server.name}")
                row[server.name] = asyncio.run(run_load(server, c, n if c == 1 else 10**9,
                                                        seconds))
            for name in row:
                if name != "upstream":
                    row[name]["added"] = added(row[name], row["upstream"])
            results["runs"][c] = {("direct" if k == "upstream" else k): v for k, v in row.items()}
            route, plain = row["gateway-route"], row["gateway"]  # the routing layer's cost
            results.setdefault("route_vs_plain", {})[c] = {
                "rps": round(route["rps"] / plain["rps"], 3),
                "total_p50": round(route["total_ms"]["p50"] / plain["total_ms"]["p50"], 3),
            }
            if "litellm" in row:
                ours, theirs = row["gateway"], row["litellm"]
                r = {
                    "added_ttft_p50": ratio(theirs["added"]["ttft_p50"], ours["added"]["ttft_p50"]),
                    "added_total_p50": ratio(theirs["added"]["total_p50"],
                                             ours["added"]["total_p50"]),
                    "rps": ratio(ours["rps"], theirs["rps"]),
                }
                r["meets_targets"] = all(x is not None and x >= 10 for x in r.values())
                results["ratios"][c] = r
        if args.profile:
            gateway = servers[1]
            log("profiling the gateway at c=32 with py-spy")
            results["profile"] = profile_during(
                gateway, workdir, seconds,
                lambda: run_load(gateway, 32, 10**9, seconds), results_dir(args.quick))
    finally:
        for server in reversed(servers):
            server.stop()
    out = results_dir(args.quick) / "overhead.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    for c, r in results.get("route_vs_plain", {}).items():
        print(f"c={c}: through a 2-variant route vs the plain model: req/s x{r['rps']}, "
              f"total p50 x{r['total_p50']}")
    if "profile" in results:
        print("\nWhere the gateway's time goes (py-spy, % of samples by area):")
        for area, share in results["profile"].get("by_area_pct", {}).items():
            print(f"  {share:5.1f}%  {area}")
    log(f"results in {out}; logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
