"""Reading the gateway's answers: error envelopes and SSE streams, checked as OpenAI
shapes them."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.schema import validate


def assert_envelope(
    response: httpx.Response, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The response is an OpenAI error envelope with all four keys, the given status,
    and nothing of the server's internals; returns its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    validate(body, "ErrorResponse")
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    return error


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE body, checking OpenAI's framing on the way: every
    event is exactly one `data: ` line followed by a blank line."""
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert raw.endswith("\n\n"), raw[-80:]
    events = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block, block
        events.append(block[len("data: ") :])
    return events


def sse_json(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an SSE body and whether it ended with `data: [DONE]`
    (nothing may follow it)."""
    events = sse_events(response)
    done = bool(events) and events[-1] == "[DONE]"
    payloads = events[:-1] if done else events
    assert "[DONE]" not in payloads
    return [json.loads(p) for p in payloads], done
