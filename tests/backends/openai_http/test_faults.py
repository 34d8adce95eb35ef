"""Upstream faults, through a real gateway process, seen by the real `openai` SDK:
refused port, stall after headers, death mid-stream, malformed JSON, 429, foreign error
dialects, and retries on another replica before the first byte."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.backends.openai_http.fake_upstream import FakeUpstream
from tests.backends.openai_http.support import replica_states, start_gateway
from tests.support.server import GatewayProcess, free_port

BODY = {"model": "fake", "prompt": "Say hello", "max_tokens": 8}
FAST = {"fail_threshold": 1000, "probe_interval": 0, "chunk_timeout": 1.0,
        "connect_timeout": 2.0, "total_timeout": 10.0}


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeUpstream, FakeUpstream, FakeUpstream]]:
    main, first, second = FakeUpstream().start(), FakeUpstream().start(), FakeUpstream().start()
    yield main, first, second
    for fake in (main, first, second):
        fake.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory,
          fakes: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    main, first, second = fakes
    models = {
        "fake": ("openai_http", {"base_url": main.base_url, "model": "upstream-name",
                                 "api_key": "sk-upstream", "headers": {"x-team": "blue"},
                                 **FAST}),
        "dead": ("openai_http", {"base_url": f"http://127.0.0.1:{free_port()}", **FAST}),
        "pair": ("openai_http", {"upstreams": [first.base_url, second.base_url],
                                 "max_retries": 1, **FAST}),
    }
    proc = start_gateway(tmp_path_factory.mktemp("faults"), "front", models, wait_ready=False)
    yield proc
    proc.stop()


@pytest.fixture
def fake(fakes: tuple[FakeUpstream, ...]) -> Iterator[FakeUpstream]:
    fakes[0].mode, fakes[0].usage = "ok", True
    yield fakes[0]
    fakes[0].mode = "ok"


@pytest.fixture
def sdk(front: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.base_url}/v1", api_key="k", max_retries=0, timeout=30)


def post(front: GatewayProcess, body: dict) -> httpx.Response:
    return httpx.post(f"{front.base_url}/v1/completions", json=body, timeout=30)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def test_forwards_model_name_key_headers_and_sampling(front: GatewayProcess,
                                                      fake: FakeUpstream,
                                                      sdk: openai.OpenAI) -> None:
    result = sdk.completions.create(model="fake", prompt="Say hello", max_tokens=8,
                                    temperature=0, stop=["\n"], seed=3)
    assert result.choices[0].text == "Hello, world!"
    assert result.usage is not None and result.usage.completion_tokens == 4
    sent = fake.posts[-1]
    assert sent.path == "/v1/completions"
    assert sent.headers["authorization"] == "Bearer sk-upstream"
    assert sent.headers["x-team"] == "blue"
    assert sent.body["model"] == "upstream-name"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_tokens"] == 8 and sent.body["stop"] == ["\n"] and sent.body["seed"] == 3


def test_upstream_without_stream_usage(front: GatewayProcess, fake: FakeUpstream,
                                       sdk: openai.OpenAI) -> None:
    fake.usage = False
    stream = sdk.completions.create(model="fake", prompt="x", max_tokens=8, stream=True,
                                    stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello, world!"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_refused_port_is_a_502_and_the_model_is_unavailable(front: GatewayProcess,
                                                            sdk: openai.OpenAI) -> None:
    # No retry storm against a refused port: answered well inside the client's 30 s
    # (a bound with room for a loaded machine, not a speed claim).
    response = post(front, {**BODY, "model": "dead"})
    assert_envelope(response, 503, "no_healthy_upstream")
    assert response.elapsed.total_seconds() < 9  # under total_timeout (10 s)
    ready = httpx.get(f"{front.base_url}/ready").json()
    assert ready["models"]["dead"] == "unavailable"
    assert ready["replicas"]["dead"][0]["state"] == "ejected"
    with pytest.raises(openai.InternalServerError):
        sdk.completions.create(model="dead", prompt="x", max_tokens=2)


def test_stall_after_headers_is_a_504(front: GatewayProcess, fake: FakeUpstream,
                                      sdk: openai.OpenAI) -> None:
    fake.mode = "stall"
    # chunk_timeout is 1 s: the 504 comes from the gateway's own deadline, long before
    # total_timeout (10 s) and the client's 30 s (room for a loaded machine).
    response = post(front, BODY)
    assert_envelope(response, 504, "upstream_timeout")
    assert response.elapsed.total_seconds() < 9  # under total_timeout (10 s)
    with pytest.raises(openai.APIStatusError) as raised:
        list(sdk.completions.create(model="fake", prompt="x", max_tokens=4, stream=True))
    assert raised.value.status_code == 504


def test_stall_mid_stream_ends_with_an_error_event(front: GatewayProcess, fake: FakeUpstream,
                                                   sdk: openai.OpenAI) -> None:
    fake.mode = "stall_mid"
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="sent no data for 1 seconds"):
        for chunk in sdk.completions.create(model="fake", prompt="x", max_tokens=4, stream=True):
            texts.append(chunk.choices[0].text)
    assert texts == ["Hello"]


def test_death_mid_stream(front: GatewayProcess, fake: FakeUpstream,
                          sdk: openai.OpenAI) -> None:
    fake.mode = "die_mid"
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="closed the stream"):
        for chunk in sdk.completions.create(model="fake", prompt="x", max_tokens=4, stream=True):
            texts.append(chunk.choices[0].text)
    assert "".join(texts) == "Hello,"
    assert_envelope(post(front, BODY), 502, "upstream_disconnected")


def test_client_disconnect_closes_the_upstream_stream(front: GatewayProcess,
                                                      fake: FakeUpstream) -> None:
    fake.mode = "stall_mid"
    before = fake.disconnects
    with httpx.stream("POST", f"{front.base_url}/v1/completions",
                      json={**BODY, "stream": True}, timeout=30) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: {")
    deadline = time.monotonic() + 3
    while fake.disconnects == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == before + 1


@pytest.mark.parametrize("mode", ["malformed", "malformed_body"])
def test_malformed_json_is_a_502(front: GatewayProcess, fake: FakeUpstream, mode: str) -> None:
    fake.mode = mode
    error = assert_envelope(post(front, BODY), 502, "upstream_bad_response")
    assert error["type"] == "server_error"


def test_429_keeps_status_message_and_retry_after(front: GatewayProcess, fake: FakeUpstream,
                                                  sdk: openai.OpenAI) -> None:
    fake.mode = "rate_limited"
    response = post(front, BODY)
    error = assert_envelope(response, 429, "rate_limit_exceeded")
    assert error["message"] == "Rate limit reached for requests"
    assert error["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "7"
    with pytest.raises(openai.RateLimitError):
        sdk.completions.create(model="fake", prompt="x", max_tokens=2)


def test_integer_codes_become_strings(front: GatewayProcess, fake: FakeUpstream) -> None:
    fake.mode = "llamacpp_context"
    error = assert_envelope(post(front, BODY), 400, "context_length_exceeded")
    assert error["message"] == "the request exceeds the available context size"
    assert error["type"] == "invalid_request_error"
    fake.mode = "vllm_flat"
    error = assert_envelope(post(front, BODY), 400, "invalid_request")
    assert error["message"] == "temperature must be non-negative"


@pytest.mark.parametrize("mode", ["unavailable", "die_before"])
def test_failure_before_first_byte_is_retried_elsewhere(
    front: GatewayProcess, fakes: tuple[FakeUpstream, ...], mode: str
) -> None:
    _, first, second = fakes
    first.mode, second.mode = mode, "ok"
    tried_before = len(first.posts)
    for _ in range(4):  # the balancer alternates, so the broken one is tried first at times
        response = post(front, {**BODY, "model": "pair"})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == "Hello, world!"
    assert len(first.posts) > tried_before
    assert replica_states(front, "pair")[0]["failures"] >= 1
    first.mode = "ok"


def test_status_endpoint_shows_replicas(front: GatewayProcess) -> None:
    states = replica_states(front, "fake")
    assert states[0]["state"] == "healthy"
    assert states[0]["url"].startswith("http://127.0.0.1:")
    assert "sk-upstream" not in httpx.get(f"{front.base_url}/v1/backends").text


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "bad.toml", tmp_path / "bad.log")
    (tmp_path / "bad.toml").write_text(
        '[[models]]\nid = "m"\nbackend = "openai_http"\n[models.options]\n'
        'upstreams = ["ftp://x"]\n'
    )
    proc.start(wait_ready=False)
    assert proc.wait(30) == 2
    proc.stop()
