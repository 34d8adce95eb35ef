"""The editors' dialects go through the same routing as /v1/*: a route with an
experiment assigns, honours the override header, answers with the route headers and
counts in /metrics under the variant, for /infill, /api/generate and /api/chat alike."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import Capabilities
from tests.gateway.routing.support import ab_route, routed_app, scrape, total
from tests.support.inprocess import ScriptedBackend, asgi_client

pytestmark = pytest.mark.anyio

CAPS = Capabilities(suffix=True, chat_template=True)
REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("/infill", {"input_prefix": "a", "input_suffix": "b", "n_predict": 4}, "infill"),
    ("/completion", {"prompt": "a", "n_predict": 4}, "completion"),
    ("/api/generate", {"prompt": "a", "raw": True, "stream": False}, "generate"),
    ("/api/chat", {"messages": [{"role": "user", "content": "a"}], "stream": False}, "chat"),
]


@pytest.mark.parametrize(("path", "body", "operation"), REQUESTS)
async def test_a_route_serves_every_dialect(
    path: str, body: dict[str, Any], operation: str
) -> None:
    backends = [ScriptedBackend(m, m, capabilities=CAPS) for m in ("local", "remote", "spare")]
    async with asgi_client(routed_app(backends, [ab_route()])) as client:
        for variant, served in (("control", "local"), ("treatment", "remote")):
            response = await client.post(
                path, json={**body, "model": "smol"}, headers={"x-gateway-variant": variant}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-gateway-route"] == "smol"
            assert response.headers["x-gateway-variant"] == variant
            assert response.headers["x-gateway-model"] == served
            assert served in response.text  # the scripted backend answers with its name
        samples = await scrape(client)
    for variant in ("control", "treatment"):
        count = total(
            samples, "gateway_requests_total", model="smol", variant=variant, operation=operation
        )
        assert count == 1


async def test_an_ollama_error_of_a_route_keeps_the_route_headers() -> None:
    plain = Capabilities(chat_template=True)  # no FIM: a suffix is refused
    backends = [ScriptedBackend(m, capabilities=plain) for m in ("local", "remote", "spare")]
    async with asgi_client(routed_app(backends, [ab_route()])) as client:
        response = await client.post(
            "/api/generate",
            json={"model": "smol", "prompt": "a", "suffix": "b"},
            headers={"x-gateway-variant": "control"},
        )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert response.headers["x-gateway-variant"] == "control"
