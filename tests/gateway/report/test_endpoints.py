"""The report endpoints in process over a real SQLite store: experiments and counts
after real traffic through a route, the JSON report (404, 400 naming `since`, `since`
filtering), the API keys, the page's shell and assets with their CSP, and `[report]`."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from gateway.config import ConfigFileError, ServerSettings, parse_config
from gateway.openapi.experiments import EXPERIMENTS, REPORT
from gateway.records import FeedbackRecord
from gateway.records.config import StoreSettings
from gateway.records.sqlite import SQLiteStore
from tests.gateway.records.support import record, stored_app
from tests.gateway.routing.support import ab_route
from tests.support.inprocess import ScriptedBackend, asgi_client
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio
EXP = "local-vs-remote"
VARIANTS = ("control", "treatment")


def app_with_store(tmp_path: Path, settings: ServerSettings | None = None) -> Any:
    models = [ScriptedBackend(m, "a b") for m in ("local", "remote", "spare")]
    store = StoreSettings(f"sqlite:///{tmp_path}/g.db")
    return stored_app(models, [ab_route()], store, ("local", "remote"), settings)


async def seed(tmp_path: Path) -> None:
    """40 records per variant at t=1000..1079, 10 more per variant at t=5000..5019, a
    retired experiment, and feedback on every control request."""
    store = SQLiteStore(tmp_path / "g.db")
    records = [
        record(f"r{i}", experiment=EXP, time=1000.0 + i, variant=VARIANTS[i % 2], total_ms=40.0 + i)
        for i in range(80)
    ]
    records += [
        record(f"late{i}", experiment=EXP, time=5000.0 + i, variant=VARIANTS[i % 2])
        for i in range(20)
    ]
    records += [record(f"old{i}", experiment="retired", variant="a") for i in range(3)]
    await store.write(records)
    for i in range(0, 80, 2):
        assert await store.put_feedback(FeedbackRecord(f"r{i}", "accepted", i % 4 == 0, 1.0))
    await store.aclose()


async def wait_for_total(client: httpx.AsyncClient, total: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        r = await client.get("/v1/experiments")
        assert r.status_code == 200, r.text
        data = {e["name"]: e for e in r.json()["data"]}
        if data.get(EXP, {}).get("total") == total:
            return data[EXP]
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.02)


async def test_counts_after_traffic_equal_what_was_sent_per_variant(tmp_path: Path) -> None:
    sent = {"control": 0, "treatment": 0}
    async with asgi_client(app_with_store(tmp_path)) as client:
        for i in range(24):
            r = await client.post(
                "/v1/completions", json={"model": "smol", "prompt": "hi", "user": f"user-{i}"}
            )
            assert r.status_code == 200, r.text
            sent[r.headers["x-gateway-variant"]] += 1
        listed = await wait_for_total(client, 24)
        jsonschema.validate({"object": "list", "data": [listed]}, EXPERIMENTS)
        assert listed["configured"] is True and listed["route"] == "smol"
        assert {v["name"]: v["count"] for v in listed["variants"]} == sent
        assert [(v["name"], v["model"], v["weight"]) for v in listed["variants"]] == [
            ("control", "local", 50),
            ("treatment", "remote", 50),
        ]
        r = await client.get(f"/v1/experiments/{EXP}/report")
        assert r.status_code == 200, r.text
        report = r.json()
        jsonschema.validate(report, REPORT)
        assert report["total"] == 24 and report["compared"] == 24
        assert {v["name"]: v["n"] for v in report["variants"]} == sent
        assert report["srm"]["counts"] == sent
        # 24 requests are fewer than min_n = 30 per variant
        assert all(v["note"] == "not enough data" for v in report["variants"])


async def test_report_since_404_and_400(tmp_path: Path) -> None:
    await seed(tmp_path)
    async with asgi_client(app_with_store(tmp_path)) as client:
        full = (await client.get(f"/v1/experiments/{EXP}/report")).json()
        assert full["total"] == 100
        assert [v["n"] for v in full["variants"]] == [50, 50]
        assert full["variants"][0]["feedback"]["accepted"]["n"] == 40
        assert full["variants"][0]["feedback"]["accepted"]["count"] == 20
        assert full["comparisons"][0]["enough_data"] is True
        for since in ("4000", "1970-01-01T01:06:40Z", "1970-01-01T01:06:40"):
            r = await client.get(f"/v1/experiments/{EXP}/report", params={"since": since})
            assert r.status_code == 200, r.text
            assert r.json()["total"] == 20 and r.json()["since"] == 4000.0
        for bad in ("yesterday", "-5", "nan", "2026-13-01"):
            r = await client.get(f"/v1/experiments/{EXP}/report", params={"since": bad})
            assert "since" in assert_envelope(r, 400, "since")["message"]
        r = await client.get(f"/v1/experiments/{EXP}/report", params={"from": "1"})
        assert_envelope(r, 400, "from")
        r = await client.get("/v1/experiments/nobody/report")
        assert_envelope(r, 404, "name", "experiment_not_found")
        # an experiment only the store knows: reported, weights unknown, no SRM check
        retired = (await client.get("/v1/experiments/retired/report")).json()
        assert retired["configured"] is False and retired["total"] == 3
        assert retired["srm"]["p_value"] is None
        listed = {e["name"]: e for e in (await client.get("/v1/experiments")).json()["data"]}
        assert listed["retired"]["configured"] is False
        assert listed["retired"]["variants"] == [
            {"name": "a", "model": None, "weight": None, "count": 3}
        ]


async def test_api_keys_guard_the_json_and_the_page_holds_no_data(tmp_path: Path) -> None:
    await seed(tmp_path)
    app = app_with_store(tmp_path, ServerSettings(api_keys=("sk-test",)))
    key = {"Authorization": "Bearer sk-test"}
    async with asgi_client(app) as client:
        for path in ("/v1/experiments", f"/v1/experiments/{EXP}/report"):
            assert_envelope(await client.get(path), 401, None, "invalid_api_key")
            assert (await client.get(path, headers=key)).status_code == 200
        # the page is a shell: no numbers, whoever asks; the script fetches the JSON
        page = await client.get(f"/experiments/{EXP}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "'unsafe-inline'" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "/experiments/assets/report.js" in page.text and "sk-test" not in page.text
        assert 'data-experiment="local-vs-remote"' in page.text
        # unknown names: a shell without a key (nothing told), 404 with one
        assert (await client.get("/experiments/nobody")).status_code == 200
        assert_envelope(await client.get("/experiments/nobody", headers=key), 404, "name")
        # a name is escaped into the page, never markup
        hostile = await client.get("/experiments/%3Cb%20onclick%3D%22x%22%3Ey")
        assert hostile.status_code == 200
        assert (
            "<b onclick" not in hostile.text and "&lt;b onclick=&quot;x&quot;&gt;y" in hostile.text
        )
        js = await client.get("/experiments/assets/report.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "sessionStorage" in js.text and "Authorization" in js.text
        css = await client.get("/experiments/assets/report.css")
        assert css.headers["content-type"].startswith("text/css")
        assert_envelope(await client.get("/experiments/assets/..%2Fpage.py"), 404)
        assert_envelope(await client.get("/experiments/assets/page.py"), 404)


async def test_no_store_no_report_routes_and_openapi_describes_them(tmp_path: Path) -> None:
    plain = stored_app([ScriptedBackend("local", "a")], [], None)
    async with asgi_client(plain) as client:
        assert (await client.get("/v1/experiments")).status_code == 404
        assert (await client.get("/experiments/x")).status_code == 404
    async with asgi_client(app_with_store(tmp_path)) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/experiments",
        "/v1/experiments/{name}/report",
        "/experiments/{name}",
        "/experiments/assets/{file}",
    ):
        assert path in paths


def test_report_section_is_validated() -> None:
    base = {"models": [{"id": "m", "backend": "llama_cpp"}]}
    config = parse_config({**base, "report": {"min_n": 50, "confidence": 0.9}}, Path("c.toml"), {})
    assert (config.report.min_n, config.report.confidence) == (50, 0.9)
    assert parse_config(base, Path("c.toml"), {}).report.min_n == 30
    for bad, key in (
        ({"min_n": 1}, "report.min_n"),
        ({"confidence": 1.0}, "report.confidence"),
        ({"resamples": "many"}, "report.resamples"),
        ({"colour": "red"}, "report.colour"),
    ):
        with pytest.raises(ConfigFileError, match=key.replace(".", r"\.")):
            parse_config({**base, "report": bad}, Path("c.toml"), {})


async def test_the_report_is_computed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The computation waits until /health has been answered: on the event loop it could
    never see that (the loop would be blocked in it) and would give up after 10 s."""
    from gateway.handlers import experiments
    from gateway.report.service import compute

    await seed(tmp_path)
    started, health_answered = threading.Event(), threading.Event()
    saw: list[bool] = []

    def waiting_compute(*args: Any) -> dict[str, object]:
        started.set()
        saw.append(health_answered.wait(10))
        return compute(*args)

    monkeypatch.setattr(experiments, "compute", waiting_compute)
    async with asgi_client(app_with_store(tmp_path)) as client:
        report = asyncio.create_task(client.get(f"/v1/experiments/{EXP}/report"))
        deadline = time.monotonic() + 10
        while not started.is_set() and not report.done():
            assert time.monotonic() < deadline, "the report never started computing"
            await asyncio.sleep(0.01)
        # computing now: the loop must still answer
        assert (await client.get("/health")).status_code == 200
        health_answered.set()
        assert (await report).status_code == 200
    assert saw == [True]
