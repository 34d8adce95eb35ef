"""What the routing layer costs on the proxy path: the same gateway process, one
instant upstream, requests for the plain model `fake` and for the route `fake-ab` (a
2-variant experiment whose variants both name `fake`, shadow off), in alternating short
rounds (ABBA...) at concurrency 1 and 32, so that drift on a shared machine hits both
alike. Prints the median of the rounds' req/s and total p50 for each path and their
ratio; writes JSON to bench/results/ (quick runs: bench/results/quick/).

    .venv/bin/python -m bench.overhead_route --quick    # under a minute
    .venv/bin/python -m bench.overhead_route            # about three minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.overhead import CONCURRENCIES, Server, log, run_load, start_gateway, start_upstream
from bench.paths import results_dir


def compare(plain: Server, route: Server, c: int, rounds: int, seconds: float) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "route": []}
    for i in range(rounds):
        order = (("plain", plain), ("route", route))
        for name, server in order if i % 2 == 0 else reversed(order):
            runs[name].append(asyncio.run(run_load(server, c, 10**9, seconds)))
    out: dict[str, Any] = {}
    for name, results in runs.items():
        out[name] = {
            "rps": round(statistics.median(r["rps"] for r in results), 1),
            "total_p50_ms": round(statistics.median(r["total_ms"]["p50"] for r in results), 2),
            "errors": sum(sum(r["errors"].values()) for r in results),
        }
    out["route_over_plain"] = {
        "rps": round(out["route"]["rps"] / out["plain"]["rps"], 3),
        "total_p50": round(out["route"]["total_p50_ms"] / out["plain"]["total_p50_ms"], 3),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args(argv)
    rounds, seconds = (6, 1.0) if args.quick else (10, 4.0)
    workdir = Path(tempfile.mkdtemp(prefix="overhead-route-"))
    upstream = start_upstream(workdir)
    gateway: Server | None = None
    results: dict[str, Any] = {"quick": args.quick, "rounds": rounds, "seconds": seconds}
    try:
        gateway = start_gateway(workdir, upstream)
        route = Server("gateway-route", gateway.proc, gateway.base_url, model="fake-ab")
        for c in CONCURRENCIES:
            log(f"c={c}: {rounds} alternating rounds of {seconds} s per path")
            results[str(c)] = compare(gateway, route, c, rounds, seconds)
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()
    out = results_dir(args.quick) / "overhead-route.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("| c | plain req/s | route req/s | plain total p50 ms | route total p50 ms | "
          "route/plain req/s | route/plain total p50 | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for c in CONCURRENCIES:
        r = results[str(c)]
        p, q, ratio = r["plain"], r["route"], r["route_over_plain"]
        print(f"| {c} | {p['rps']} | {q['rps']} | {p['total_p50_ms']} | {q['total_p50_ms']} | "
              f"{ratio['rps']} | {ratio['total_p50']} | {p['errors'] + q['errors']} |")
    log(f"results in {out}; logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
