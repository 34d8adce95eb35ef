"""Routes end to end: real gateway processes on loopback, real GGUF models (tiny BLOOM
files written at test time), a second gateway as the remote variant's upstream, and
the real OpenAI SDK as the client. Sticky assignment across processes, the override
header, headers on streams and plain responses, fallback when the upstream is killed
and the return when it is back, shadows that never delay the client, /metrics read
with prometheus-client's parser, and /ready?model=."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends.openai_http.fake_upstream import FakeUpstream
from tests.support.server import GatewayProcess

Z999 = 3.2905  # two-sided 99.9 % normal quantile
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def upstream_config(bloom: Path) -> str:
    return f"""
[[models]]
id = "bloom"
backend = "llama_cpp"
[models.options]
model_path = "{bloom}"
n_ctx = 256
parallel = 2
threads = 1
"""


def routed_config(
    bloom: Path, upstream: str, fakes: dict[str, FakeUpstream], control: int = 50
) -> str:
    remote = "\n".join(
        f"""
[[models]]
id = "{name}"
backend = "openai_http"
hidden = true
[models.options]
upstreams = ["{url}"]
model = "bloom"
probe_interval = 0.2
cooldown = 0.2
fail_threshold = 1
max_retries = 0
chunk_timeout = 30
"""
        for name, url in {"remote": upstream, **{k: f.base_url for k, f in fakes.items()}}.items()
    )
    return f"""
[server]
log_format = "json"

[[models]]
id = "local"
backend = "llama_cpp"
hidden = true
[models.options]
model_path = "{bloom}"
n_ctx = 256
parallel = 2
threads = 1
{remote}

[[routes]]
id = "tiny"
fallbacks = ["local"]
[routes.experiment]
name = "local-vs-remote"
unit = "user"
salt = "2026-12"
variants = [
  {{ name = "control", model = "local", weight = {control} }},
  {{ name = "treatment", model = "remote", weight = 50 }},
]

[[routes]]
id = "compared"
model = "local"
[routes.shadow]
model = "differs"
sample = 1.0
max_concurrency = 4

[[routes]]
id = "stalled"
model = "local"
[routes.shadow]
model = "stalls"
sample = 1.0
max_concurrency = 2

[[routes]]
id = "endless"
model = "hangs"
"""


class Gateways:
    """The upstream gateway (the remote variant's server) and the routed one."""

    def __init__(self, folder: Path, bloom: Path, fakes: dict[str, FakeUpstream]) -> None:
        self.folder = folder
        self.bloom = bloom
        self.fakes = fakes
        up_config = folder / "upstream.toml"
        up_config.write_text(upstream_config(bloom))
        self.upstream = GatewayProcess(up_config, folder / "upstream.log")
        self.config = folder / "routed.toml"
        self.config.write_text(routed_config(bloom, self.upstream.base_url, fakes))
        self.routed = GatewayProcess(self.config, folder / "routed.log")

    def client(self, gateway: GatewayProcess | None = None) -> openai.OpenAI:
        base = (gateway or self.routed).base_url
        return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)

    def restart_upstream(self) -> None:
        self.upstream = GatewayProcess(
            self.upstream.config_path,
            self.folder / "upstream-2.log",
            port=self.upstream.port,
        ).start()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path) -> Iterator[Gateways]:
    folder = tmp_path_factory.mktemp("routes")
    fakes = {
        "differs": FakeUpstream().start(),  # answers "Hello, world!" whatever it is asked
        "stalls": FakeUpstream(mode="stall").start(),  # headers, then nothing
        "hangs": FakeUpstream(mode="stall_mid").start(),  # one chunk, then nothing
    }
    gw = Gateways(folder, tiny_bloom_path, fakes)
    gw.upstream.start()
    gw.routed.start()
    try:
        yield gw
    finally:
        gw.routed.stop()
        gw.upstream.stop()
        for fake in fakes.values():
            fake.stop()


def complete(client: openai.OpenAI, **kw: Any) -> tuple[httpx.Headers, Any]:
    raw = client.completions.with_raw_response.create(
        **{"model": "tiny", "prompt": "hello", "max_tokens": 2, "temperature": 0, **kw}
    )
    return raw.headers, raw.parse()


def scrape(gateway: GatewayProcess) -> Samples:
    response = httpx.get(f"{gateway.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lbls), v in samples.items()
        if n == name and all(dict(lbls).get(k) == val for k, val in labels.items())
    )


def poll(check: Callable[[], bool], timeout: float = 30, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(every)


def variants(client: openai.OpenAI, users: list[str]) -> list[str]:
    return [complete(client, user=u, max_tokens=1)[0]["x-gateway-variant"] for u in users]


def test_sticky_assignment_across_processes_and_weight_changes(gateways: Gateways) -> None:
    users = [f"user-{i}" for i in range(400)]
    before = scrape(gateways.routed)
    seen = variants(gateways.client(), users)
    after = scrape(gateways.routed)
    share = seen.count("control")
    assert abs(share - 200) <= Z999 * math.sqrt(400 * 0.25), share
    assert set(seen) == {"control", "treatment"}
    # a repeated user gets the same variant every time
    assert variants(gateways.client(), [users[0]] * 20) == [seen[0]] * 20
    # the metrics counted exactly what was sent, per variant
    for name in ("control", "treatment"):
        counted = total(after, "gateway_requests_total", model="tiny", variant=name) - total(
            before, "gateway_requests_total", model="tiny", variant=name
        )
        assert counted == seen.count(name)
    # the local variant's engine reports how long each request waited for a slot
    queue = "gateway_queue_wait_seconds_count"
    waited = total(after, queue, model="tiny", served_by="local") - total(
        before, queue, model="tiny", served_by="local"
    )
    assert waited == seen.count("control")
    # a second process with the same config agrees; one with control at 60 moves only
    # users of the variant that shrinks (treatment) to the one that grows
    folder = gateways.folder
    grown = folder / "grown.toml"
    grown.write_text(
        routed_config(gateways.bloom, gateways.upstream.base_url, gateways.fakes, control=60)
    )
    some = users[:120]
    with GatewayProcess(gateways.config, folder / "twin.log") as twin:
        assert variants(gateways.client(twin), some) == seen[:120]
    with GatewayProcess(grown, folder / "grown.log") as other:
        moved = [
            (a, b)
            for a, b in zip(seen[:120], variants(gateways.client(other), some), strict=True)
            if a != b
        ]
    assert all(a == "treatment" and b == "control" for a, b in moved), moved


def test_override_header_and_headers_on_streams_and_plain_responses(gateways: Gateways) -> None:
    client = gateways.client()
    for name, served in (("control", "local"), ("treatment", "remote")):
        headers, body = complete(client, extra_headers={"x-gateway-variant": name})
        assert headers["x-gateway-route"] == "tiny"
        assert headers["x-gateway-experiment"] == "local-vs-remote"
        assert (headers["x-gateway-variant"], headers["x-gateway-model"]) == (name, served)
        assert body.model == "tiny"
        raw = client.completions.with_raw_response.create(
            model="tiny",
            prompt="hello",
            max_tokens=2,
            stream=True,
            extra_headers={"x-gateway-variant": name},
        )
        assert (raw.headers["x-gateway-variant"], raw.headers["x-gateway-model"]) == (name, served)
        assert {chunk.model for chunk in raw.parse()} == {"tiny"}
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, extra_headers={"x-gateway-variant": "nope"})
    assert err.value.body["param"] == "x-gateway-variant"  # type: ignore[index]
    models = [m.id for m in client.models.list()]
    assert "tiny" in models and "local" not in models and "remote" not in models
    with pytest.raises(openai.NotFoundError):
        complete(client, model="local")


def test_streams_are_counted_and_cancelled_streams_too(gateways: Gateways) -> None:
    client = gateways.client()
    before = scrape(gateways.routed)
    sent_tokens = 0
    for _ in range(3):
        stream = client.completions.create(
            model="tiny",
            prompt="hello",
            max_tokens=3,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            user="streamer",
        )
        sent_tokens += [c.usage.completion_tokens for c in stream if c.usage][-1]
    with httpx.stream(
        "POST",
        f"{gateways.routed.base_url}/v1/completions",
        timeout=30,
        json={"model": "endless", "prompt": "x", "max_tokens": 50, "stream": True},
    ) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the first chunk, then the client leaves

    def cancelled() -> float:
        now = scrape(gateways.routed)
        return total(now, "gateway_requests_cancelled_total", model="endless") - total(
            before, "gateway_requests_cancelled_total", model="endless"
        )

    poll(lambda: cancelled() == 1)
    after = scrape(gateways.routed)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert delta(ttft, model="tiny", stream="true") == 3
    assert delta("gen_ai_client_token_usage_sum", model="tiny", token_type="output") == sent_tokens
    assert delta("gateway_requests_total", model="endless", error_type="cancelled") == 1


def test_fallback_when_the_upstream_is_killed_and_return_when_it_is_back(
    gateways: Gateways,
) -> None:
    client = gateways.client()
    users = [f"fb-{i}" for i in range(40)]
    treated = [u for u, v in zip(users, variants(client, users), strict=True) if v == "treatment"][
        :6
    ]
    assert treated
    before = scrape(gateways.routed)
    gateways.upstream.stop()
    try:
        for user in treated:
            headers, body = complete(client, user=user)  # raises on any client error
            assert headers["x-gateway-variant"] == "treatment"
            assert headers["x-gateway-model"] == "local"
            assert body.model == "tiny"
        ready = httpx.get(f"{gateways.routed.base_url}/ready", params={"model": "tiny"})
        remote = httpx.get(f"{gateways.routed.base_url}/ready", params={"model": "remote"})
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert remote.status_code == 503
        assert httpx.get(f"{gateways.routed.base_url}/ready").status_code == 503
    finally:
        gateways.restart_upstream()
    after = scrape(gateways.routed)
    fallbacks = "gateway_fallbacks_total"
    labels = {"model": "tiny", "from": "remote", "to": "local"}
    assert total(after, fallbacks, **labels) - total(before, fallbacks, **labels) == len(treated)
    lines = [json.loads(x) for x in gateways.routed.logs().splitlines() if x.startswith("{")]
    fell = [x for x in lines if x.get("event") == "request" and x.get("fell_back")]
    assert len(fell) >= len(treated)
    assert all(x["variant"] == "treatment" and x["served_by"] == "local" for x in fell)
    # the upstream is back: its users return to it
    poll(lambda: complete(client, user=treated[0])[0]["x-gateway-model"] == "remote")
    ready = httpx.get(f"{gateways.routed.base_url}/ready", params={"model": "remote"})
    assert ready.status_code == 200


def test_shadows_are_compared_and_a_stalled_one_never_delays_the_client(
    gateways: Gateways,
) -> None:
    client = gateways.client()
    before = scrape(gateways.routed)
    # the copy answers differently at temperature 0: a mismatch, counted
    headers, body = complete(client, model="compared")
    assert headers["x-gateway-route"] == "compared" and body.usage.completion_tokens == 2

    def shadows(result: str, route: str) -> float:
        now = scrape(gateways.routed)
        name = "gateway_shadow_total"
        return total(now, name, model=route, result=result) - total(
            before, name, model=route, result=result
        )

    poll(lambda: shadows("mismatch", "compared") == 1)
    # copies to an upstream that never answers: every client request completes while
    # the copies hang, two of them at most (the rest are dropped, never queued)
    stalls = gateways.fakes["stalls"]
    posts = len(stalls.posts)
    for _ in range(5):
        headers, body = complete(client, model="stalled")
        assert body.choices[0].text is not None and headers["x-gateway-model"] == "local"
    assert len(stalls.posts) - posts <= 2
    assert shadows("dropped", "stalled") >= 3
    assert shadows("ok", "stalled") + shadows("mismatch", "stalled") == 0
