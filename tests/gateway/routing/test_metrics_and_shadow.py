"""/metrics read back with prometheus-client's own parser after known traffic (per
variant requests and tokens, TTFT counts of streams, errors, cancelled streams with
their tokens so far, assignments, backends), its API-key guard, and shadow copies:
never delaying the client, dropped past max_concurrency, compared with the primary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backends.base import Capabilities, GenerationRequest
from backends.errors import UpstreamError
from gateway.config import ServerSettings
from gateway.metrics_config import MetricsSettings
from gateway.routing import Shadow
from gateway.routing.shadow import ShadowRunner
from tests.gateway.routing.support import ab_route, routed_app, scrape, total
from tests.support.inprocess import Script, ScriptedBackend, ThreadedServer, asgi_client
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio

CAPS = Capabilities(chat_template=True)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def backends(**kw: ScriptedBackend) -> list[ScriptedBackend]:
    out = {
        "local": ScriptedBackend("local", "a b c", capabilities=CAPS),  # 3 tokens
        "remote": ScriptedBackend("remote", "a b c d e", capabilities=CAPS),  # 5 tokens
        "spare": ScriptedBackend("spare", "a b c", capabilities=CAPS),
    }
    out.update(kw)
    return list(out.values())


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "smol", "prompt": "hi", "max_tokens": 8, "temperature": 0, **kw}


async def until(
    client: httpx.AsyncClient, holds: Callable[[Samples], bool], timeout: float = 10
) -> Samples:
    """Scrape until `holds(samples)`, within a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(client)
        if holds(samples):
            return samples
        assert time.monotonic() < deadline, "metrics never reached the expected state"
        await asyncio.sleep(0.02)


async def test_counters_equal_the_traffic_sent() -> None:
    app = routed_app(backends(), [ab_route()], ("local", "remote"))
    control, treatment = {"x-gateway-variant": "control"}, {"x-gateway-variant": "treatment"}
    async with asgi_client(app) as client:
        for _ in range(3):
            assert (await client.post("/v1/completions", json=body(), headers=control)).is_success
        for _ in range(2):
            stream = body(stream=True, stream_options={"include_usage": True})
            assert (await client.post("/v1/completions", json=stream, headers=treatment)).is_success
        chat = {"model": "smol", "user": "alice", "messages": [{"role": "user", "content": "x"}]}
        assert (await client.post("/v1/chat/completions", json=chat)).is_success
        assert (await client.post("/v1/completions", json=body())).is_success  # no user
        assert (await client.post("/v1/completions", json=body(model="spare"))).is_success
        await client.post("/v1/completions", json=body(model="nope"))  # a 404, no generation
        samples = await scrape(client)

    requests = "gateway_requests_total"
    assert total(samples, requests, variant="control", operation="completion", stream="false") >= 3
    assert total(samples, requests, variant="treatment", stream="true", status_class="2xx") == 2
    assert total(samples, requests, model="smol") == 7
    assert total(samples, requests, model="spare", variant="", served_by="spare") == 1
    assert total(samples, requests, operation="chat") == 1
    assert total(samples, requests, model="nope") == 0
    output = "gen_ai_client_token_usage_sum"
    assert total(samples, output, variant="treatment", stream="true", token_type="output") == 10
    assert total(samples, output, served_by="local", token_type="input") == 3 * total(
        samples, "gen_ai_client_token_usage_count", served_by="local", token_type="input"
    )
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert total(samples, ttft, stream="true") == 2
    assert total(samples, ttft) == 8
    assert total(samples, "gen_ai_server_request_duration_seconds_count", model="smol") == 7
    assert total(samples, "gen_ai_server_time_per_output_token_seconds_count") == 8
    assignments = "gateway_experiment_assignments_total"
    assert total(samples, assignments, assignment="override") == 5
    assert total(samples, assignments, assignment="hash") == 1
    assert total(samples, assignments, assignment="unit_missing") == 1
    assert total(samples, assignments, experiment="local-vs-remote") == 7
    assert total(samples, "gateway_inflight_requests") == 0
    assert total(samples, "gateway_backend_up", model="local") == 1
    # the scripted backend reports no slots: no busy-slot series is made up for it
    assert total(samples, "gateway_backend_slots_busy") == 0
    # no user, key or session value is ever a label
    assert not any("alice" in str(labels) for _, labels in samples)


async def test_errors_are_counted_with_their_type() -> None:
    broken = ScriptedBackend("spare", fail_with=UpstreamError("down", 502), capabilities=CAPS)
    app = routed_app(backends(spare=broken), [ab_route()], ("local", "remote"))
    async with asgi_client(app) as client:
        response = await client.post("/v1/completions", json=body(model="spare"))
        samples = await scrape(client)
    assert response.status_code == 502
    assert total(samples, "gateway_requests_total", model="spare", status_class="5xx") == 1
    assert total(samples, "gateway_inflight_requests") == 0


async def test_a_cancelled_stream_is_counted_with_its_tokens_so_far() -> None:
    endless = ScriptedBackend(
        "local", capabilities=CAPS, script=lambda r: Script(("a", " b", " c"), block_after=2)
    )
    app = routed_app(backends(local=endless), [ab_route()], ("local", "remote"))
    with ThreadedServer(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with client.stream(
                "POST",
                "/v1/completions",
                json=body(stream=True),
                headers={"x-gateway-variant": "control"},
            ) as response:
                assert response.headers["x-gateway-variant"] == "control"
                seen = ""
                async for text in response.aiter_text():
                    seen += text
                    if seen.count("data: ") >= 2:
                        break
            samples = await until(
                client, lambda s: total(s, "gateway_requests_cancelled_total") == 1
            )
    assert total(samples, "gateway_requests_cancelled_total", variant="control", stream="true") == 1
    assert total(samples, "gateway_requests_total", error_type="cancelled") == 1
    assert total(samples, "gen_ai_client_token_usage_sum", token_type="output") == 2
    assert total(samples, "gateway_inflight_requests") == 0


@pytest.mark.parametrize(
    ("metrics", "key", "status"),
    [
        (MetricsSettings(), None, 401),
        (MetricsSettings(), "sk-test", 200),
        (MetricsSettings(require_api_key=False), None, 200),
        (MetricsSettings(enabled=False), "sk-test", 404),
    ],
)
async def test_metrics_are_guarded_by_the_api_keys(
    metrics: MetricsSettings, key: str | None, status: int
) -> None:
    app = routed_app(
        backends(),
        [ab_route()],
        ("local", "remote"),
        ServerSettings(api_keys=("sk-test",)),
        metrics,
    )
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with asgi_client(app) as client:
        response = await client.get("/metrics", headers=headers)
    if status == 200:
        assert "gateway_backend_up" in response.text
    else:
        assert_envelope(response, status)


def shadow_app(shadow_backend: ScriptedBackend, max_concurrency: int = 1) -> Any:
    route = ab_route(shadow=Shadow("spare", 1.0, max_concurrency))
    return routed_app(backends(spare=shadow_backend), [route], ("local", "remote"))


async def test_a_stalled_shadow_neither_delays_the_client_nor_queues() -> None:
    stalled = ScriptedBackend(
        "spare", capabilities=CAPS, script=lambda r: Script(("x",), block_after=0)
    )
    async with asgi_client(shadow_app(stalled)) as client:
        first = await client.post("/v1/completions", json=body(user="u1"))
        # the client has its whole answer while its copy is still stalled
        assert first.status_code == 200 and stalled.calls.running == 1
        second = await client.post("/v1/completions", json=body(stream=True, user="u2"))
        assert second.status_code == 200
        samples = await scrape(client)
    assert stalled.calls.running == 0  # cancelled at shutdown, with the app
    assert len(stalled.calls.requests) == 1
    assert total(samples, "gateway_shadow_total", result="dropped") == 1
    assert first.json()["usage"]["completion_tokens"] in (3, 5)  # the primary's alone
    assert total(samples, "gateway_requests_total") == 2


@pytest.mark.parametrize(("text", "result"), [("a b c", "ok"), ("a b x", "mismatch")])
async def test_a_shadow_is_compared_with_the_primary(text: str, result: str) -> None:
    copy = ScriptedBackend("spare", text, capabilities=CAPS)
    async with asgi_client(shadow_app(copy, max_concurrency=4)) as client:
        response = await client.post(
            "/v1/completions", json=body(), headers={"x-gateway-variant": "control"}
        )
        assert response.json()["choices"][0]["text"] == "a b c"
        samples = await until(client, lambda s: total(s, "gateway_shadow_total") == 1)
    assert total(samples, "gateway_shadow_total", model="smol", shadow="spare", result=result) == 1
    roles = "gateway_shadow_request_duration_seconds_count"
    assert total(samples, roles, role="primary") == 1 and total(samples, roles, role="shadow") == 1


async def test_a_failing_shadow_is_counted_and_the_client_served() -> None:
    broken = ScriptedBackend("spare", fail_with=UpstreamError("down", 502), capabilities=CAPS)
    async with asgi_client(shadow_app(broken)) as client:
        response = await client.post("/v1/completions", json=body(user="u1"))
        samples = await until(client, lambda s: total(s, "gateway_shadow_total") == 1)
    assert response.status_code == 200
    assert total(samples, "gateway_shadow_total", result="error") == 1


async def test_a_primary_that_is_never_read_does_not_hold_a_shadow_slot() -> None:
    results: list[str] = []
    runner = ShadowRunner(lambda route, shadow, result: results.append(result), lambda *a: None)
    copy = ScriptedBackend("spare", "a b", capabilities=CAPS)
    shadow = Shadow("spare", 1.0, 1)
    request = [GenerationRequest("x", request_id="r-shadow")]
    tap = runner.start("smol", shadow, lambda: copy, request, deadline=0.2)
    assert tap is not None  # its primary's streams are never wrapped nor read
    await asyncio.wait_for(asyncio.gather(*runner.tasks), 10)
    assert results == ["ok"]  # compared with nothing, after the deadline
    again = runner.start("smol", shadow, lambda: copy, request, deadline=0.2)
    assert again is not None  # the slot was given back
    again.abandon()
    await runner.aclose()


def test_error_types_cannot_grow_the_series_without_bound() -> None:
    from gateway.metrics import MAX_ERROR_TYPES, GatewayMetrics
    from gateway.middleware import AccessRecord

    metrics = GatewayMetrics()
    for i in range(MAX_ERROR_TYPES + 50):
        record = AccessRecord(model="m", operation="completion", error=f"upstream_code_{i}")
        metrics.started("m")
        metrics.observe(record, 502, 0.01)
    families = {m.name: m for m in metrics.registry.collect()}
    kinds = {s.labels["error_type"] for s in families["gateway_requests"].samples}
    assert len(kinds) == MAX_ERROR_TYPES + 1 and "other" in kinds
