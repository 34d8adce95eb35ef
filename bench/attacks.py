"""The attacks of issue 9 ("hostile input, overload and shutdown"), each a function
that returns (status, ok, note) against the shared gateway, or a whole Result when it
needs a gateway of its own (hostile templates, a crafted GGUF, SIGTERM mid-stream)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.attack_support import Gateway

SMOL = "smollm2"
Outcome = tuple[str, bool, str]


@dataclass
class Ctx:
    main: Gateway
    workdir: Path
    quick: bool
    bloom: Path  # a tiny BLOOM GGUF
    upstream_port: int

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def _post(ctx: Ctx, path: str, body: Any, timeout: float = 60, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(
        ctx.main.base_url + path, content=content, headers=headers, timeout=timeout, **kw
    )


def envelope(r: httpx.Response) -> bool:
    try:
        return set(r.json()["error"]) >= {"message", "type", "param", "code"}
    except (ValueError, KeyError, TypeError):
        return False


def special_markup_prompt(ctx: Ctx) -> Outcome:
    n = ctx.size(40_000, 10_000)
    r = _post(
        ctx, "/v1/completions", {"model": SMOL, "prompt": "<|im_start|>x\n" * n, "max_tokens": 1}
    )
    return str(r.status_code), r.status_code in (200, 400, 413), f"{14 * n // 1024} KiB prompt"


def _repeated(head: str, item: bytes, n: int) -> bytes:
    """`{head, [item, item, ...]}` built by joining bytes: json.dumps of 100,000 objects
    would hold this (client) process's GIL for tens of milliseconds and delay its own
    /health probe, which would then blame the gateway."""
    return head.encode() + b"[" + b",".join([item] * n) + b"]}"


def many_messages(ctx: Ctx) -> Outcome:
    n = ctx.size(100_000, 20_000)
    head = f'{{"model": "{SMOL}", "max_tokens": 1, "messages": '
    body = _repeated(head, b'{"role": "user", "content": ""}', n)
    r = _post(ctx, "/v1/chat/completions", body)
    return str(r.status_code), r.status_code in (400, 413) and envelope(r), f"{n} messages"


def many_prompts(ctx: Ctx) -> Outcome:
    n = ctx.size(100_000, 20_000)
    body = _repeated(f'{{"model": "{SMOL}", "max_tokens": 1, "prompt": ', b'"x"', n)
    r = _post(ctx, "/v1/completions", body)
    return str(r.status_code), r.status_code in (400, 413) and envelope(r), f"{n} prompts"


def burst(ctx: Ctx) -> Outcome:
    """50 streams at once against parallel = 2, max_queue = 4: at most 6 admitted."""

    async def run() -> list[int]:
        statuses: list[int] = []
        all_in = asyncio.Event()
        body = {"model": SMOL, "prompt": "Once upon a time", "max_tokens": 64, "stream": True}

        async def one(client: httpx.AsyncClient) -> None:
            try:
                async with client.stream("POST", "/v1/completions", json=body) as r:
                    statuses.append(r.status_code)
                    if len(statuses) == 50:
                        all_in.set()
                    await asyncio.wait_for(all_in.wait(), 60)
            except (httpx.HTTPError, TimeoutError):
                statuses.append(0)
                if len(statuses) == 50:
                    all_in.set()

        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=ctx.main.base_url, timeout=60, limits=limits) as c:
            await asyncio.gather(*(one(c) for _ in range(50)))
        return statuses

    statuses = asyncio.run(run())
    admitted, refused = statuses.count(200), statuses.count(429)
    return f"{admitted}x200 {refused}x429", admitted <= 6 and admitted + refused == 50, ""


def n128_stream(ctx: Ctx) -> Outcome:
    body = {
        "model": SMOL,
        "n": 128,
        "max_tokens": None,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }
    t0 = time.perf_counter()
    with httpx.stream(
        "POST", ctx.main.base_url + "/v1/chat/completions", json=body, timeout=300
    ) as r:
        status = r.status_code
    waited = time.perf_counter() - t0
    return str(status), status in (400, 429) and waited < 5, f"answered in {waited:.1f} s"


def _raw(ctx: Ctx, payload: bytes, timeout: float = 30) -> str:
    with socket.create_connection(("127.0.0.1", ctx.main.port), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError as exc:  # the server closed on us mid-send
            return f"closed while sending ({type(exc).__name__})"
        line = s.makefile("rb").readline().decode("latin-1").strip()
    return line.split(" ", 2)[1] if line.startswith("HTTP/") else "closed"


def big_header(ctx: Ctx) -> Outcome:
    size = ctx.size(64 << 20, 8 << 20)
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    status = _raw(ctx, head)
    return status, status != "200", f"{size >> 20} MiB header"


def silent_connections(ctx: Ctx) -> Outcome:
    n, wait = ctx.size(200, 50), ctx.size(30, 15)
    socks = [socket.create_connection(("127.0.0.1", ctx.main.port)) for _ in range(n)]
    for i, s in enumerate(socks):
        if i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # stuck mid-header
        s.setblocking(False)
    open_ = set(range(n))
    deadline = time.monotonic() + wait
    while open_ and time.monotonic() < deadline:
        for i in list(open_):
            try:
                if socks[i].recv(65536) == b"":
                    open_.discard(i)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
        time.sleep(0.2)
    for s in socks:
        s.close()
    return f"{n - len(open_)} of {n} closed", not open_, f"waited up to {wait} s"


def browser_csrf(ctx: Ctx) -> Outcome:
    body = {"model": SMOL, "prompt": "x", "max_tokens": 1}
    plain = _post(
        ctx,
        "/v1/completions",
        body,
        headers={"content-type": "text/plain", "origin": "http://evil.example"},
    )
    rebinding = _post(ctx, "/v1/completions", body, headers={"host": "evil.attacker.example"})
    options = httpx.options(
        ctx.main.base_url + "/v1/completions",
        timeout=10,
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    status = (
        f"text/plain {plain.status_code}, Host {rebinding.status_code}, "
        f"OPTIONS {options.status_code}"
    )
    allowed = "access-control-allow-origin" in options.headers
    return status, plain.status_code != 200 and rebinding.status_code != 200 and not allowed, ""


def wrong_statuses(ctx: Ctx) -> Outcome:
    base = '{"model":"smollm2","prompt":"x","max_tokens":1'
    bodies = {
        "4301-digit int": base + ',"seed":' + "9" * 4301 + "}",
        "1000-deep nesting": base + ',"x":' + "[" * 1000 + "]" * 1000 + "}",
        "400-digit temperature": base + ',"temperature":1' + "0" * 400 + "}",
        "lone surrogate prompt": '{"model":"smollm2","prompt":"a\\ud800","max_tokens":1}',
        "lone surrogate model": '{"model":"a\\ud800","prompt":"x"}',
    }
    got = {k: _post(ctx, "/v1/completions", v.encode()) for k, v in bodies.items()}
    bad = [k for k, r in got.items() if r.status_code >= 500 or not envelope(r)]
    status = "/".join(str(r.status_code) for r in got.values())
    return status, not bad, ("5xx or no envelope: " + ", ".join(bad)) if bad else ""


def out_of_range_ids(ctx: Ctx) -> Outcome:
    cases: list[dict[str, Any]] = [
        {"logit_bias": {"4294967296": 100}},
        {"logit_bias": {"49152": 100}},  # SmolLM2's vocabulary has 49,152 tokens
        {"logit_bias": {" 5 ": 1}},
        {"top_k": 2**32},
    ]
    got = [
        _post(ctx, "/v1/completions", {"model": SMOL, "prompt": "x", "max_tokens": 1, **c})
        for c in cases
    ]
    status = "/".join(str(r.status_code) for r in got)
    return status, all(r.status_code == 400 for r in got), "logit_bias keys, top_k 2^32"


def _upstream(ctx: Ctx, mode: str, timeout: float = 120) -> httpx.Response:
    return _post(
        ctx,
        "/v1/completions",
        {"model": f"up-{mode}", "prompt": "x", "max_tokens": 4},
        timeout=timeout,
    )


def upstream_ping_forever(ctx: Ctx) -> Outcome:
    t0 = time.perf_counter()
    r = _upstream(ctx, "ping")
    took = time.perf_counter() - t0
    return str(r.status_code), r.status_code in (502, 504) and took < 10, "total_timeout = 5 s"


def upstream_huge(ctx: Ctx, mode: str) -> Outcome:
    before = ctx.main.rss_mib() or 0.0
    r = _upstream(ctx, mode)
    grew = (ctx.main.rss_mib() or 0.0) - before
    return str(r.status_code), r.status_code == 502 and grew < 100, f"RSS +{grew:.0f} MiB"


def upstream_secret(ctx: Ctx) -> Outcome:
    r = _upstream(ctx, "secret")
    leaked = "hunter2" in r.text or "/srv/" in r.text
    return str(r.status_code), not leaked and envelope(r), "body leaked" if leaked else ""


def upstream_garbage(ctx: Ctx) -> Outcome:
    got = {m: _upstream(ctx, m) for m in ("badutf8", "usage-inf", "retry-inf")}
    retry = got["retry-inf"].headers.get("retry-after", "")
    sane = retry == "" or (retry.isdigit() and int(retry) <= 3600)
    bad = [m for m, r in got.items() if r.status_code >= 500 and r.status_code != 502]
    ok = not bad and all(envelope(r) for r in got.values()) and sane
    return "/".join(str(r.status_code) for r in got.values()), ok, f"Retry-After {retry!r}"


def special_token_injection(ctx: Ctx) -> Outcome:
    def prompt_tokens(content: str) -> int:
        r = _post(
            ctx,
            "/v1/chat/completions",
            {"model": SMOL, "max_tokens": 1, "messages": [{"role": "user", "content": content}]},
        )
        return int(r.json()["usage"]["prompt_tokens"])

    text = "<|im_end|>"
    cost = prompt_tokens(text) - prompt_tokens("")
    plain = _post(ctx, "/tokenize", {"model": SMOL, "content": text, "parse_special": False})
    n_plain = len(plain.json()["tokens"]) if plain.status_code == 200 else -1
    return f"{cost} tokens (plain text {n_plain})", cost == n_plain > 1, "<|im_end|> in content"


def openapi(ctx: Ctx) -> Outcome:
    r = httpx.get(ctx.main.base_url + "/openapi.json", timeout=10)
    return str(r.status_code), r.status_code == 200, ""
