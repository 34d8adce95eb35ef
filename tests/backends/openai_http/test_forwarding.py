"""openai_http forwards `logprobs`, `echo` and `suffix` when its options say the
upstream supports them, and refuses them (400 naming the field) when they do not.
Real processes: an upstream gateway serving a tiny BLOOM GGUF that declares FIM tokens
and a chat template, and a front gateway relaying to it; every answer through the
front equals the upstream's own, log-probs included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.ggufgen import write_bloom
from tests.support.server import GatewayProcess

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def clients(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    folder = tmp_path_factory.mktemp("forwarding")
    gguf = write_bloom(folder / "fim.gguf", fim=True, chat_template=TEMPLATE)
    upstream_config = folder / "upstream.toml"
    upstream_config.write_text(
        f'[[models]]\nid = "tiny"\nbackend = "llama_cpp"\n[models.options]\n'
        f'model_path = "{gguf}"\nn_ctx = 256\nparallel = 2\nthreads = 1\n'
    )
    with GatewayProcess(upstream_config, folder / "upstream.log") as upstream:
        front_config = folder / "front.toml"
        front_config.write_text(
            f'[[models]]\nid = "tiny"\nbackend = "openai_http"\n[models.options]\n'
            f'base_url = "{upstream.base_url}"\nlogprobs = true\necho = true\nsuffix = true\n'
            f'\n[[models]]\nid = "strict"\nbackend = "openai_http"\n[models.options]\n'
            f'base_url = "{upstream.base_url}"\nmodel = "tiny"\n'
        )
        with GatewayProcess(front_config, folder / "front.log") as front:
            yield tuple(  # type: ignore[misc]
                openai.OpenAI(base_url=f"{g.base_url}/v1", api_key="x", max_retries=0, timeout=60)
                for g in (front, upstream)
            )


def comparable(body: Any) -> Any:
    """A response without what differs between two servers (ids, times, fingerprints)."""
    data = body.model_dump() if hasattr(body, "model_dump") else body
    for key in ("id", "created", "system_fingerprint", "model"):
        data.pop(key, None)
    return data


def assert_same(front: Any, upstream: Any) -> None:
    """Equal, log-probs within 1e-4 (the upstream computes them twice)."""
    close(comparable(front), comparable(upstream), "")


def close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), where
        for key in a:
            close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-4), where
    else:
        assert a == b, where


COMPLETIONS = [
    {"prompt": "hello world", "max_tokens": 6, "logprobs": 3},
    {"prompt": "hello world", "max_tokens": 4, "echo": True, "logprobs": 2},
    {"prompt": "hello world", "max_tokens": 4, "echo": True},
    {"prompt": "def f(", "suffix": "\n", "max_tokens": 5},
]


@pytest.mark.parametrize("fields", COMPLETIONS, ids=["logprobs", "echo+logprobs", "echo", "suffix"])
def test_completions_through_the_front_equal_the_upstream(
    clients: tuple[openai.OpenAI, openai.OpenAI], fields: dict[str, Any]
) -> None:
    front, upstream = clients
    kw = {"model": "tiny", "temperature": 0, **fields}
    direct = upstream.completions.create(**kw)
    relayed = front.completions.create(**kw)
    assert relayed.choices[0].text == direct.choices[0].text
    assert_same(relayed.choices[0], direct.choices[0])
    if "logprobs" in fields:
        assert relayed.choices[0].logprobs is not None
        assert relayed.choices[0].logprobs.tokens  # something was forwarded and read back


@pytest.mark.parametrize("fields", COMPLETIONS[:3], ids=["logprobs", "echo+logprobs", "echo"])
def test_streams_through_the_front_equal_the_upstream(
    clients: tuple[openai.OpenAI, openai.OpenAI], fields: dict[str, Any]
) -> None:
    front, upstream = clients
    kw = {"model": "tiny", "temperature": 0, "stream": True, **fields}

    def joined(client: openai.OpenAI) -> tuple[str, list[Any], list[Any]]:
        text, tokens, values = "", [], []
        for chunk in client.completions.create(**kw):
            for choice in chunk.choices:
                text += choice.text
                if choice.logprobs is not None:
                    tokens += choice.logprobs.tokens or []
                    values += choice.logprobs.token_logprobs or []
        return text, tokens, values

    (text_a, tokens_a, values_a), (text_b, tokens_b, values_b) = joined(front), joined(upstream)
    assert (text_a, tokens_a) == (text_b, tokens_b)
    assert values_a == pytest.approx(values_b, abs=1e-4)
    if fields.get("echo"):
        assert text_a.startswith("hello world")


def test_chat_logprobs_through_the_front_equal_the_upstream(
    clients: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    front, upstream = clients
    kw = {
        "model": "tiny",
        "temperature": 0,
        "max_tokens": 5,
        "logprobs": True,
        "top_logprobs": 2,
        "messages": [{"role": "user", "content": "hi"}],
    }
    direct = upstream.chat.completions.create(**kw)
    relayed = front.chat.completions.create(**kw)
    assert relayed.choices[0].logprobs is not None and relayed.choices[0].logprobs.content
    assert_same(relayed.choices[0], direct.choices[0])


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"logprobs": 1}, "logprobs"), ({"echo": True}, "echo"), ({"suffix": "x"}, "suffix")],
)
def test_an_upstream_not_declared_able_refuses_with_a_400(
    clients: tuple[openai.OpenAI, openai.OpenAI], fields: dict[str, Any], param: str
) -> None:
    front, _ = clients
    with pytest.raises(openai.BadRequestError) as err:
        front.completions.create(model="strict", prompt="hello", max_tokens=2, **fields)
    assert err.value.body["param"] == param  # type: ignore[index]
