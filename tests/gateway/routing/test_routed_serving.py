"""Routes served in process over scripted backends: the plan's headers on streams and
plain responses, the route id in the body, overrides, hidden models, fallbacks before
the first byte (and never after), the shared deadline, /v1/models and /ready?model=."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import Capabilities, Health
from backends.errors import BackendError, InvalidRequest, Overloaded, UpstreamError
from gateway.routing import RouteConfig, Router, Units
from tests.gateway.routing.support import ab_route, routed_app, scrape, total
from tests.support.inprocess import Script, ScriptedBackend, asgi_client
from tests.support.wire import assert_envelope, sse_json

pytestmark = pytest.mark.anyio

CAPS = Capabilities(chat_template=True)


def backends(**kw: Any) -> dict[str, ScriptedBackend]:
    """local / remote / spare, each answering its own name; `kw` overrides one."""
    out = {
        name: ScriptedBackend(name, f"from {name}", capabilities=CAPS)
        for name in ("local", "remote", "spare")
    }
    out.update(kw)
    return out


def app_of(models: dict[str, ScriptedBackend], *routes: RouteConfig, **kw: Any) -> Any:
    return routed_app(list(models.values()), routes or (ab_route(),), ("local", "remote"), **kw)


def user_for(variant: str) -> str:
    router = Router([ab_route()], ["local", "remote", "spare"])
    return next(
        u
        for u in (f"u{i}" for i in range(100))
        if router.plan("smol", Units(user=u)).variant == variant
    )


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "smol", "prompt": "hi", "max_tokens": 4, "temperature": 0, **kw}


@pytest.mark.parametrize("variant", ["control", "treatment"])
async def test_headers_and_body_of_a_plain_response(variant: str) -> None:
    models = backends()
    async with asgi_client(app_of(models)) as client:
        response = await client.post("/v1/completions", json=body(user=user_for(variant)))
    assert response.status_code == 200, response.text
    served = "local" if variant == "control" else "remote"
    assert response.headers["x-gateway-route"] == "smol"
    assert response.headers["x-gateway-experiment"] == "local-vs-remote"
    assert response.headers["x-gateway-variant"] == variant
    assert response.headers["x-gateway-model"] == served
    data = response.json()
    assert data["model"] == "smol"
    assert data["choices"][0]["text"] == f"from {served}"


async def test_headers_of_a_chat_stream() -> None:
    models = backends()
    async with asgi_client(app_of(models)) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "smol",
                "stream": True,
                "user": user_for("treatment"),
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    assert response.status_code == 200
    assert response.headers["x-gateway-variant"] == "treatment"
    assert response.headers["x-gateway-model"] == "remote"
    chunks, done = sse_json(response)
    assert done and {c["model"] for c in chunks} == {"smol"}


async def test_the_override_header_forces_a_variant_and_an_unknown_one_is_a_400() -> None:
    async with asgi_client(app_of(backends())) as client:
        for variant in ("control", "treatment"):
            response = await client.post(
                "/v1/completions",
                json=body(user=user_for("control" if variant == "treatment" else "treatment")),
                headers={"x-gateway-variant": variant},
            )
            assert response.headers["x-gateway-variant"] == variant
        bad = await client.post(
            "/v1/completions", json=body(), headers={"x-gateway-variant": "nope"}
        )
    assert_envelope(bad, 400, param="x-gateway-variant")
    assert "'nope' is not a variant" in bad.json()["error"]["message"]


async def test_an_override_is_refused_when_the_route_turns_it_off() -> None:
    async with asgi_client(app_of(backends(), ab_route(allow_override=False))) as client:
        response = await client.post(
            "/v1/completions", json=body(), headers={"x-gateway-variant": "control"}
        )
    assert_envelope(response, 400, param="x-gateway-variant")


async def test_hidden_models_are_neither_listed_nor_addressable() -> None:
    async with asgi_client(app_of(backends())) as client:
        listed = await client.get("/v1/models")
        route = await client.get("/v1/models/smol")
        hidden = await client.get("/v1/models/local")
        direct = await client.post("/v1/completions", json=body(model="local"))
        plain = await client.post("/v1/completions", json=body(model="spare"))
    assert [m["id"] for m in listed.json()["data"]] == ["spare", "smol"]
    assert route.status_code == 200 and route.json()["id"] == "smol"
    assert_envelope(hidden, 404, code="model_not_found")
    assert_envelope(direct, 404, code="model_not_found")
    # a plain model is served as before, without route headers
    assert plain.status_code == 200 and "x-gateway-route" not in plain.headers


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamError("upstream unreachable", 502),
        UpstreamError("no healthy upstream", 503, code="no_healthy_upstream"),
        UpstreamError("slow down", 429),
        Overloaded("queue full"),
        BackendError("engine broke"),
    ],
    ids=["502", "503", "429", "overloaded", "backend-error"],
)
async def test_a_failure_before_the_first_event_falls_back(failure: Exception) -> None:
    broken = ScriptedBackend("remote", "never", fail_with=failure, capabilities=CAPS)
    models = backends(remote=broken)
    async with asgi_client(app_of(models)) as client:
        response = await client.post("/v1/completions", json=body(user=user_for("treatment")))
        samples = await scrape(client)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-variant"] == "treatment"  # the assignment stays
    assert response.headers["x-gateway-model"] == "spare"
    assert response.json()["choices"][0]["text"] == "from spare"
    assert total(samples, "gateway_fallbacks_total", **{"from": "remote", "to": "spare"}) == 1
    assert total(samples, "gateway_requests_total", variant="treatment", served_by="spare") == 1


async def test_a_capability_the_variant_lacks_falls_back_and_none_having_it_is_the_old_400() -> (
    None
):
    echoing = Capabilities(chat_template=True, echo=True)
    models = backends(spare=ScriptedBackend("spare", "from spare", capabilities=echoing))
    async with asgi_client(app_of(models)) as client:
        served = await client.post(
            "/v1/completions", json=body(echo=True, user=user_for("control"))
        )
        alone = await client.post(
            "/v1/completions", json=body(echo=True), headers={"x-gateway-variant": "control"}
        )
    assert served.status_code == 200 and served.headers["x-gateway-model"] == "spare"
    async with asgi_client(app_of(backends())) as client:
        refused = await client.post("/v1/completions", json=body(echo=True))
    assert alone.status_code == 200
    assert_envelope(refused, 400, param="echo")
    assert "'smol'" in refused.json()["error"]["message"]  # the name the client sent
    assert "local" not in refused.json()["error"]["message"]


async def test_the_request_s_own_fault_does_not_fall_back() -> None:
    bad = InvalidRequest(
        "This model's maximum context length is 8 tokens", "prompt", "context_length_exceeded"
    )
    models = backends(local=ScriptedBackend("local", "x", fail_with=bad, capabilities=CAPS))
    async with asgi_client(app_of(models)) as client:
        response = await client.post("/v1/completions", json=body(user=user_for("control")))
    assert_envelope(response, 400, code="context_length_exceeded")
    assert response.headers["x-gateway-variant"] == "control"
    assert models["spare"].calls.requests == []


async def test_nothing_falls_back_after_the_first_byte() -> None:
    late = ScriptedBackend(
        "remote", "one two three", fail_with=BackendError("died"), fail_after=1, capabilities=CAPS
    )
    models = backends(remote=late)
    async with asgi_client(app_of(models)) as client:
        response = await client.post(
            "/v1/completions", json=body(stream=True, user=user_for("treatment"))
        )
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "remote"
    assert '"error"' in response.text
    assert models["spare"].calls.requests == []


async def test_every_candidate_failing_answers_with_the_assigned_one_s_error() -> None:
    models = backends(
        remote=ScriptedBackend(
            "remote", "x", fail_with=UpstreamError("down", 502), capabilities=CAPS
        ),
        spare=ScriptedBackend("spare", "x", fail_with=Overloaded("full"), capabilities=CAPS),
    )
    async with asgi_client(app_of(models)) as client:
        response = await client.post("/v1/completions", json=body(user=user_for("treatment")))
    assert response.status_code == 502
    assert response.headers["x-gateway-model"] == "remote"


async def test_one_deadline_covers_every_candidate() -> None:
    stalled = ScriptedBackend(
        "remote", capabilities=CAPS, script=lambda r: Script(("never",), block_after=0)
    )
    models = backends(remote=stalled)
    async with asgi_client(app_of(models, ab_route(deadline=0.3))) as client:
        response = await client.post("/v1/completions", json=body(user=user_for("treatment")))
    assert_envelope(response, 504, code="timeout")
    assert models["spare"].calls.requests == []  # no time was left for it
    assert models["remote"].calls.abandoned  # the stalled attempt was stopped


async def test_an_alias_route_serves_with_route_headers_only() -> None:
    models = backends()
    alias = RouteConfig("fast", model="local", fallbacks=("spare",))
    async with asgi_client(app_of(models, ab_route(), alias)) as client:
        response = await client.post("/v1/completions", json=body(model="fast"))
    assert response.headers["x-gateway-route"] == "fast"
    assert response.headers["x-gateway-model"] == "local"
    assert "x-gateway-variant" not in response.headers


async def test_ready_per_model_and_route() -> None:
    models = backends()
    app = app_of(models)
    async with asgi_client(app) as client:
        ok_route = await client.get("/ready", params={"model": "smol"})
        ok_model = await client.get("/ready", params={"model": "spare"})
        unknown = await client.get("/ready", params={"model": "nope"})
    assert ok_route.status_code == 200
    assert ok_route.json() == {
        "status": "ready",
        "model": "smol",
        "models": {"local": "ready", "remote": "ready", "spare": "ready"},
    }
    assert ok_model.status_code == 200
    assert_envelope(unknown, 404, code="model_not_found")


class Dead(ScriptedBackend):
    """A loaded backend whose engine has died."""

    def health(self) -> Health:
        return Health("failed", "the engine stopped")


async def test_a_route_is_ready_while_one_candidate_is() -> None:
    half = backends(
        local=Dead("local", capabilities=CAPS), remote=Dead("remote", capabilities=CAPS)
    )
    async with asgi_client(app_of(half)) as client:
        one_left = await client.get("/ready", params={"model": "smol"})
        whole = await client.get("/ready")
        served = await client.post("/v1/completions", json=body(user=user_for("control")))
    dead = backends(
        local=Dead("local", capabilities=CAPS),
        remote=Dead("remote", capabilities=CAPS),
        spare=Dead("spare", capabilities=CAPS),
    )
    async with asgi_client(app_of(dead)) as client:
        none_left = await client.get("/ready", params={"model": "smol"})
    assert one_left.status_code == 200
    assert one_left.json()["models"] == {"local": "failed", "remote": "failed", "spare": "ready"}
    assert whole.status_code == 503
    assert served.status_code == 200 and served.headers["x-gateway-model"] == "spare"
    assert none_left.status_code == 503 and none_left.json()["status"] == "not_ready"


async def test_the_tokenizer_endpoints_know_routes_and_hide_hidden_models() -> None:
    async with asgi_client(app_of(backends())) as client:
        hidden = await client.post("/tokenize", json={"model": "local", "content": "hi"})
        route = await client.post("/tokenize", json={"model": "smol", "content": "hi"})
        info = await client.get("/tokenizer_info")
    assert_envelope(hidden, 404, code="model_not_found")
    # the route reached its first model's backend (a scripted one has no tokenizer)
    assert_envelope(route, 400, param="model")
    assert "scripted" in route.json()["error"]["message"]
    assert_envelope(info, 400, param="model")  # the first public id is "spare", also scripted
