"""Ollama's `format` on a real model (SmolLM2, the shared test gateway process) with
the `ollama` client: a JSON schema constrains the answer as `response_format` does on
/v1, streamed and not."""

from __future__ import annotations

import json

import ollama

from tests.conftest import SMOL_ID
from tests.support.server import GatewayProcess

SCHEMA = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
    "required": ["color", "count"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Pick a color and a number, as JSON."}]


def test_format_schema_constrains_the_chat(gateway: GatewayProcess) -> None:
    client = ollama.Client(host=gateway.base_url)
    options = {"num_predict": 48, "temperature": 0}
    reply = client.chat(model=SMOL_ID, messages=MESSAGES, format=SCHEMA, options=options)
    answer = json.loads(reply.message.content or "")
    assert answer["color"] in ("red", "green", "blue") and isinstance(answer["count"], int)
    assert set(answer) == {"color", "count"}
    pieces = client.chat(
        model=SMOL_ID, messages=MESSAGES, format=SCHEMA, options=options, stream=True
    )
    assert json.loads("".join(p.message.content or "" for p in pieces)) == answer


def test_format_json_on_generate(gateway: GatewayProcess) -> None:
    client = ollama.Client(host=gateway.base_url)
    options = {"num_predict": 48, "temperature": 0}
    reply = client.generate(model=SMOL_ID, prompt="A JSON object:", format="json", options=options)
    if reply.done_reason == "stop":  # a cut object is not JSON; a finished one must be
        assert isinstance(json.loads(reply.response), dict)
    else:
        assert reply.response.lstrip().startswith("{")
