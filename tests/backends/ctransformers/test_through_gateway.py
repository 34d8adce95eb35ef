"""The ctransformers backend served by a real gateway process, on tiny models written at
test time. ctransformers can still crash the process it runs in, so it never runs in the
pytest process: every test here talks to a gateway subprocess over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.ctmodels import write_gpt2_ggml, write_llama_spm
from tests.support.server import GatewayProcess
from tests.support.wire import assert_envelope, sse_json

TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\\n{% endfor %}assistant:"
NON_ASCII = "Grüße aus Köln — 你好, ünïcødé ✓ a b"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("ctransformers")
    gpt2 = write_gpt2_ggml(folder / "gpt2.bin")
    gpt2_other = write_gpt2_ggml(folder / "gpt2-other.bin", seed=5)
    # wide enough that 1,500 tokens take seconds: a client leaving is noticed long before
    long = write_gpt2_ggml(folder / "gpt2-long.bin", n_embd=256, n_layer=4, n_ctx=2048, seed=3)
    llama = write_llama_spm(folder / "llama.gguf")
    config = folder / "gateway.toml"
    config.write_text(
        f"""
[[models]]
id = "gpt2"
backend = "ctransformers"
[models.options]
model_path = "{gpt2}"
model_type = "gpt2"

[[models]]
id = "gpt2-in-process"
backend = "ctransformers"
isolation = "none"
[models.options]
model_path = "{gpt2}"
model_type = "gpt2"

[[models]]
id = "gpt2-in-process-2"
backend = "ctransformers"
isolation = "none"
[models.options]
model_path = "{gpt2_other}"
model_type = "gpt2"

[[models]]
id = "gpt2-wide"
backend = "ctransformers"
isolation = "none"
[models.options]
model_path = "{long}"
model_type = "gpt2"

[[models]]
id = "gpt2-short"
backend = "ctransformers"
isolation = "none"
[models.options]
model_path = "{gpt2}"
model_type = "gpt2"
context_length = 64

[[models]]
id = "gpt2-long"
backend = "ctransformers"
[models.options]
model_path = "{long}"
model_type = "gpt2"
max_queue = 0

[[models]]
id = "llama"
backend = "ctransformers"
[models.options]
model_path = "{llama}"
model_type = "llama"
lib = "basic"
chat_template = "{TEMPLATE}"
"""
    )
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


def complete(gw: GatewayProcess, **body: Any) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/v1/completions", json=body, timeout=120)


def stream(gw: GatewayProcess, **body: Any) -> tuple[str, list[dict[str, Any]]]:
    r = complete(gw, **body, stream=True)
    assert r.status_code == 200, r.text
    chunks, done = sse_json(r)
    assert done
    return "".join(c["choices"][0]["text"] for c in chunks), chunks


def stats(gw: GatewayProcess, model: str) -> dict[str, Any]:
    data = httpx.get(f"{gw.base_url}/v1/backends", timeout=30).json()["data"]
    return next(m for m in data if m["model"] == model)["stats"]


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_greedy_output_is_deterministic_and_the_same_streamed(
    gateway: GatewayProcess, model: str
) -> None:
    body = {"model": model, "prompt": "the cat is on the mat", "max_tokens": 24, "temperature": 0}
    first, second = complete(gateway, **body).json(), complete(gateway, **body).json()
    assert first["choices"][0]["text"] == second["choices"][0]["text"]
    assert first["usage"] == second["usage"]
    streamed, chunks = stream(gateway, **body)
    assert streamed == first["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == first["choices"][0]["finish_reason"]


def test_it_runs_in_a_worker_by_default_with_the_same_output_as_in_process(
    gateway: GatewayProcess,
) -> None:
    data = httpx.get(f"{gateway.base_url}/v1/backends", timeout=30).json()["data"]
    isolation = {m["model"]: m["isolation"] for m in data}
    assert isolation["gpt2"] == "process" and isolation["gpt2-in-process"] == "none"
    body = {"prompt": "Grüße", "max_tokens": 16, "temperature": 0, "logprobs": 2}
    worker = complete(gateway, model="gpt2", **body).json()["choices"][0]
    inside = complete(gateway, model="gpt2-in-process", **body).json()["choices"][0]
    assert worker["text"] == inside["text"]
    assert worker["logprobs"]["token_logprobs"] == inside["logprobs"]["token_logprobs"]


def workers(gw: GatewayProcess) -> dict[str, Any]:
    data = httpx.get(f"{gw.base_url}/v1/backends", timeout=30).json()["data"]
    return {m["model"]: m["worker"] for m in data if m["worker"] is not None}


def test_a_non_ascii_prompt_fifty_times_does_not_crash(gateway: GatewayProcess) -> None:
    # ctransformers' own tokenize() overflows its buffer on this prompt (heap corruption):
    # in process, that would take the gateway down; in a worker, it would restart
    before = {model: (w["pid"], w["restarts"]) for model, w in workers(gateway).items()}
    for i in range(50):
        model = ("gpt2", "llama", "gpt2-in-process")[i % 3]
        r = complete(gateway, model=model, prompt=NON_ASCII * 3, max_tokens=4, temperature=0.5)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] >= len(NON_ASCII)
    assert gateway.returncode is None
    assert httpx.get(f"{gateway.base_url}/health", timeout=30).status_code == 200
    after = {model: (w["pid"], w["restarts"]) for model, w in workers(gateway).items()}
    assert after == before and before["gpt2"][0] is not None


def test_two_models_in_one_process_evaluate_in_turn(gateway: GatewayProcess) -> None:
    # Two legacy-GGML models evaluating at once share the library's static scratch
    # buffer (a segfault, or wrong text): the backend lets one evaluate at a time.
    body = {"prompt": "Once upon a time", "max_tokens": 120, "temperature": 0}
    models = ("gpt2-in-process", "gpt2-in-process-2")
    alone = {m: complete(gateway, model=m, **body).json()["choices"][0]["text"] for m in models}
    assert alone[models[0]] != alone[models[1]]
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(complete, gateway, model=m, **body) for m in models * 2]
        together = [job.result() for job in jobs]
    assert gateway.returncode is None
    for model, r in zip(models * 2, together, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == alone[model]


def test_a_stop_string_across_tokens_is_held_back(gateway: GatewayProcess) -> None:
    body = {"model": "llama", "prompt": "the cat", "max_tokens": 24, "temperature": 0}
    text, chunks = stream(gateway, **body)
    pieces = [c["choices"][0]["text"] for c in chunks if c["choices"][0]["text"]]
    # the last character of one piece and the first of the next: two tokens
    at = next(i for i in range(2, len(pieces)) if pieces[i - 1][-1:] and pieces[i][:1])
    stop = pieces[at - 1][-1] + pieces[at][0]
    expected = text[: text.index(stop)]
    streamed, chunks = stream(gateway, **body, stop=[stop])
    assert streamed == expected
    assert all(stop not in c["choices"][0]["text"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    whole = complete(gateway, **body, stop=[stop]).json()["choices"][0]
    assert (whole["text"], whole["finish_reason"]) == (expected, "stop")


def test_seeded_sampling_repeats_and_top_k_is_clamped(gateway: GatewayProcess) -> None:
    body = {"model": "gpt2", "prompt": "Once", "max_tokens": 16, "temperature": 0.9, "seed": 7}
    a, b = complete(gateway, **body).json(), complete(gateway, **body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    # top_k past the vocabulary aborts ctransformers' gpt2 sampler unclamped
    r = complete(gateway, **body, top_k=1_000_000, top_p=0.9, repeat_penalty=1.3)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_repeat_penalty_is_honoured(gateway: GatewayProcess) -> None:
    body = {"model": "gpt2", "prompt": "aaaa", "max_tokens": 48, "temperature": 0}
    plain = complete(gateway, **body).json()["choices"][0]["text"]
    penalised = complete(gateway, **body, repeat_penalty=3.0).json()["choices"][0]["text"]
    assert penalised != plain


def test_logprobs_of_generated_tokens(gateway: GatewayProcess) -> None:
    body = {"model": "llama", "prompt": "the cat", "max_tokens": 8, "temperature": 0}
    r = complete(gateway, **body, logprobs=3)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == r.json()["usage"]["completion_tokens"]
    for value, top in zip(lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert value <= 0 and len(top) == 3
        assert value == pytest.approx(max(top.values()))  # greedy picks the most likely
    assert choice["text"] == complete(gateway, **body).json()["choices"][0]["text"]


def test_echo_is_refused_since_there_are_no_prompt_logprobs(gateway: GatewayProcess) -> None:
    r = complete(gateway, model="gpt2", prompt="hi", max_tokens=2, echo=True, logprobs=1)
    assert_envelope(r, 400, param="echo")


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty", "logit_bias"])
def test_sampling_fields_it_cannot_honour_are_refused(gateway: GatewayProcess, field: str) -> None:
    value: Any = {"5": 1.0} if field == "logit_bias" else 0.5
    r = complete(gateway, model="gpt2", prompt="hi", max_tokens=2, **{field: value})
    assert_envelope(r, 400, param=field)


def test_the_context_caps_max_tokens(gateway: GatewayProcess) -> None:
    r = complete(gateway, model="gpt2", prompt="hi", max_tokens=300)
    error = assert_envelope(r, 400, param="prompt")
    assert error["code"] == "context_length_exceeded" and "256" in error["message"]
    whole = complete(gateway, model="gpt2", prompt="x" * 200, max_tokens=None, temperature=0)
    usage = whole.json()["usage"]  # no max_tokens: up to the context, never past it
    assert usage["prompt_tokens"] == 200 and usage["total_tokens"] <= 256
    # a context_length below a GGML file's own is enforced by the backend
    short = complete(gateway, model="gpt2-short", prompt="x" * 60, max_tokens=8)
    assert "maximum context length is 64 tokens" in assert_envelope(short, 400)["message"]


def test_chat_goes_through_the_configured_template(gateway: GatewayProcess) -> None:
    messages = [{"role": "user", "content": "the cat"}]
    r = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": "llama", "messages": messages, "max_tokens": 8, "temperature": 0},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    plain = complete(
        gateway, model="llama", prompt="user: the cat\nassistant:", max_tokens=8, temperature=0
    ).json()
    assert r.json()["choices"][0]["message"]["content"] == plain["choices"][0]["text"]
    assert r.json()["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_tokenize_non_ascii(gateway: GatewayProcess) -> None:
    r = httpx.post(
        f"{gateway.base_url}/tokenize",
        json={"model": "gpt2", "content": NON_ASCII, "with_pieces": False},
        timeout=30,
    )
    tokens = r.json()["tokens"]
    assert len(tokens) == len(NON_ASCII.encode())  # one byte per token in this vocabulary
    back = httpx.post(f"{gateway.base_url}/detokenize", json={"model": "gpt2", "tokens": tokens})
    assert back.json()["content"] == NON_ASCII


def access_line(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        for line in gw.logs().splitlines():
            if request_id in line and '"gateway.access"' in line:
                return json.loads(line)
        assert time.monotonic() < deadline, "no access line"
        time.sleep(0.05)


def test_a_queued_request_reports_its_wait_and_prompt(gateway: GatewayProcess) -> None:
    # in process, so that its stats are live (a worker's come with its heartbeats)
    body = {"model": "gpt2-wide", "prompt": "Once", "max_tokens": 1500, "temperature": 0}
    with httpx.stream(
        "POST", f"{gateway.base_url}/v1/completions", json={**body, "stream": True}, timeout=120
    ) as first:
        lines = first.iter_lines()
        assert any(next(lines).startswith("data: {") for _ in range(4))  # it holds the turn
        with ThreadPoolExecutor(1) as pool:
            second = pool.submit(complete, gateway, **{**body, "max_tokens": 2})
            wait_stats(gateway, "gpt2-wide", lambda s: s["queued"] == 1)
            first.close()  # the queued one runs once the first has stopped
            r = second.result()
    assert r.status_code == 200, r.text
    line = access_line(gateway, r.headers["x-request-id"])
    assert line["queue_ms"] > 0 and line["prompt_tokens"] == 4


LONG = {"model": "gpt2-long", "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0}


def wait_stats(
    gw: GatewayProcess, model: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    """The model's stats once `until` holds (polled: under isolation = "process" they
    arrive with the worker's heartbeats, a little late)."""
    deadline = time.monotonic() + timeout
    current = stats(gw, model)
    while not until(current):
        assert time.monotonic() < deadline, f"stats never got there: {current}"
        time.sleep(0.05)
        current = stats(gw, model)
    return current


def idle(s: dict[str, Any]) -> bool:
    """Known to be idle: empty stats (before the worker's first heartbeat) are not."""
    return "busy_slots" in s and not (s["busy_slots"] or s["queued"])


def test_one_at_a_time_429_past_the_queue_and_a_client_leaving_stops_generation(
    gateway: GatewayProcess,
) -> None:
    # Greedy is deterministic: the long request really runs all 1,500 tokens when nobody
    # stops it (no end-of-text on the way), so a cancelled one can only stop early.
    start = wait_stats(gateway, "gpt2-long", idle)["tokens_generated"]
    whole = complete(gateway, **LONG).json()
    assert whole["usage"]["completion_tokens"] == LONG["max_tokens"]
    before = start + LONG["max_tokens"]
    wait_stats(gateway, "gpt2-long", lambda s: idle(s) and s["tokens_generated"] == before)
    with httpx.stream(
        "POST", f"{gateway.base_url}/v1/completions", json={**LONG, "stream": True}, timeout=120
    ) as response:
        lines = response.iter_lines()
        assert any(next(lines).startswith("data: {") for _ in range(4))
        # it holds the one slot: with max_queue = 0 another request is refused at once
        refused = complete(gateway, **{**LONG, "max_tokens": 2})
        assert_envelope(refused, 429)
        assert refused.headers.get("retry-after")
    # Idle with more tokens than before: a report made after the stream ended (stats
    # come with the worker's heartbeats). Unstopped, it would have added 1,500.
    after = wait_stats(gateway, "gpt2-long", lambda s: idle(s) and s["tokens_generated"] > before)[
        "tokens_generated"
    ]
    assert after - before < LONG["max_tokens"] * 3 // 4
    follow = complete(gateway, **{**LONG, "max_tokens": 3})
    assert follow.status_code == 200 and follow.json()["usage"]["completion_tokens"] == 3
