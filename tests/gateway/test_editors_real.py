"""The editors' endpoints on a real model through a real socket: a tiny BLOOM GGUF that
declares FIM (and repository) tokens and a chat template, served by the real app on
uvicorn. llama.vscode's /infill bodies (its warm-up with n_predict 0 included) and
the `ollama` Python client from PyPI (list, show, generate, chat, streamed and not)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from backends.llama_cpp import LlamaCppBackend
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.gateway.test_llamacpp_endpoints import VIM_INFILL, VSCODE_INFILL, VSCODE_WARMUP
from tests.support.ggufgen import write_bloom
from tests.support.inprocess import ThreadedServer

TEMPLATE = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}[assistant:"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    folder = tmp_path_factory.mktemp("coder")
    path = write_bloom(folder / "coder.gguf", fim=True, fim_repo=True, chat_template=TEMPLATE)
    backend = LlamaCppBackend.from_config(
        "coder", {"model_path": str(path), "threads": 1, "parallel": 2}, folder
    )
    config = GatewayConfig(ServerSettings(), (), Path("inline.toml"))
    app = create_app(config, ModelRegistry([ServedModel("coder", backend)]))
    with ThreadedServer(app) as server:
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.base_url}/ready", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.05)
        yield server


def test_llama_vscode_infill_and_warm_up(server: ThreadedServer) -> None:
    url = f"{server.base_url}/infill"
    warm = httpx.post(url, json={k: v for k, v in VSCODE_WARMUP.items() if k != "response_fields"})
    assert warm.status_code == 200, warm.text
    body = warm.json()
    assert body["content"] == "" and body["timings"]["predicted_n"] == 0
    assert body["timings"]["prompt_n"] > 0  # the prompt, with its repository context
    answer = httpx.post(url, json={**VSCODE_INFILL, "n_predict": 16}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert isinstance(body["content"], str) and body["stop"] is True
    assert 0 < body["timings"]["predicted_n"] <= 16
    assert body["tokens_cached"] == body["timings"]["prompt_n"] + body["timings"]["predicted_n"]
    assert body["truncated"] is False
    vim = httpx.post(url, json={**VIM_INFILL, "n_predict": 8}, timeout=60)
    assert vim.status_code == 200 and set(vim.json()) == set(VIM_INFILL["response_fields"])


def test_completion_streams_llama_cpp_events(server: ThreadedServer) -> None:
    body = {"prompt": "def f(", "n_predict": 6, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{server.base_url}/completion", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1].startswith(
        'data: {"index":0,"content":"","tokens":[],"id_slot":-1,"stop":true'
    )


def test_the_ollama_client_lists_generates_and_chats(server: ThreadedServer) -> None:
    client = ollama.Client(host=server.base_url)
    names = [m.model for m in client.list().models]
    assert names == ["coder"]
    assert "insert" in (client.show("coder").capabilities or [])
    options = {"num_predict": 6, "temperature": 0, "seed": 1}
    generated = client.generate(model="coder", prompt="def f(", options=options)
    assert generated.done and generated.eval_count == 6 and generated.done_reason == "length"
    pieces = list(client.generate(model="coder", prompt="def f(", options=options, stream=True))
    assert pieces[-1].done and "".join(p.response for p in pieces) == generated.response
    fim = client.generate(model="coder:latest", prompt="def f(", suffix="):", options=options)
    assert fim.done and fim.prompt_eval_count and fim.prompt_eval_count > 3
    messages = [{"role": "user", "content": "hi"}]
    chat = client.chat(model="coder", messages=messages, options=options)
    assert chat.message.role == "assistant" and chat.eval_count == 6
    streamed = list(client.chat(model="coder", messages=messages, options=options, stream=True))
    assert "".join(p.message.content or "" for p in streamed) == chat.message.content
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="nope", prompt="x")
    assert err.value.status_code == 404 and "nope" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("llama3")
    assert "does not download" in err.value.error
