"""openai_http forwards `response_format` when its options say the upstream honours it
(`response_format = true`), and refuses it with a 400 otherwise. Real processes: an
upstream gateway enforcing the schema with a grammar on a tiny BLOOM GGUF, and a
front gateway relaying to it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from backends.base import GenerationRequest, OutputConstraint
from backends.openai_http.wire import build_body
from tests.support.ggufgen import write_bloom
from tests.support.schemas import SCHEMAS
from tests.support.server import GatewayProcess

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
FORMAT = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMAS["status"]}}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    folder = tmp_path_factory.mktemp("structured-forwarding")
    gguf = write_bloom(folder / "tiny.gguf", chat_template=TEMPLATE)
    upstream_config = folder / "upstream.toml"
    upstream_config.write_text(
        f'[[models]]\nid = "tiny"\nbackend = "llama_cpp"\n[models.options]\n'
        f'model_path = "{gguf}"\nn_ctx = 256\nparallel = 2\nthreads = 1\n'
    )
    with GatewayProcess(upstream_config, folder / "upstream.log") as upstream:
        front_config = folder / "front.toml"
        front_config.write_text(
            f'[[models]]\nid = "tiny"\nbackend = "openai_http"\n[models.options]\n'
            f'base_url = "{upstream.base_url}"\nresponse_format = true\n'
            f'\n[[models]]\nid = "strict"\nbackend = "openai_http"\n[models.options]\n'
            f'base_url = "{upstream.base_url}"\nmodel = "tiny"\n'
        )
        with GatewayProcess(front_config, folder / "front.log") as gateway:
            yield openai.OpenAI(
                base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=120
            )


def test_response_format_reaches_an_upstream_that_enforces_it(front: openai.OpenAI) -> None:
    for temperature in (0.0, 1.0):
        answer = front.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "status?"}],
            response_format=FORMAT,  # type: ignore[arg-type]
            max_tokens=160,
            temperature=temperature,
        )
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMAS["status"])


def test_response_format_is_refused_when_the_options_do_not_say_so(front: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        front.chat.completions.create(
            model="strict",
            messages=[{"role": "user", "content": "status?"}],
            response_format=FORMAT,  # type: ignore[arg-type]
        )
    assert info.value.body["param"] == "response_format"  # type: ignore[index]


def test_the_forwarded_body_carries_the_constraint() -> None:
    schema = OutputConstraint("json_schema", {"type": "object"}, "x", strict=True)
    body = build_body(GenerationRequest("p", constraint=schema), "m", False, False)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    plain = build_body(
        GenerationRequest("p", constraint=OutputConstraint("json_object")), "m", False, False
    )
    assert plain["response_format"] == {"type": "json_object"}
    assert "response_format" not in build_body(GenerationRequest("p"), "m", False, False)
