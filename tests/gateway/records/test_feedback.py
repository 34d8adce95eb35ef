"""POST /v1/feedback in process, over a real SQLite file: stored per (request, metric),
overwritten when repeated, 404 for an id no record has, 400 naming the field, guarded
by the API keys, absent without a [store]; and the [store] section's validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config import ConfigFileError, ServerSettings, parse_config
from gateway.records import FeedbackRecord
from gateway.records.config import StoreSettings
from gateway.records.sqlite import SQLiteStore
from tests.gateway.records.support import stored_app
from tests.gateway.routing.support import ab_route
from tests.support.inprocess import ScriptedBackend, asgi_client
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio


def app_with_store(tmp_path: Path, settings: ServerSettings | None = None) -> Any:
    models = [ScriptedBackend(m, "a b") for m in ("local", "remote", "spare")]
    store = StoreSettings(f"sqlite:///{tmp_path}/g.db")
    return stored_app(models, [ab_route()], store, ("local", "remote"), settings)


async def test_feedback_is_stored_and_overwritten(tmp_path: Path) -> None:
    async with asgi_client(app_with_store(tmp_path)) as client:
        r = await client.post("/v1/completions", json={"model": "smol", "prompt": "x"})
        rid = r.headers["x-request-id"]
        # posted at once: the record may still be queued; the gateway writes it first
        ok = await client.post(
            "/v1/feedback", json={"request_id": rid, "metric": "accepted", "value": True}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "object": "feedback", "request_id": rid, "metric": "accepted", "value": True
        }
        for metric, value in (("score", 4), ("accepted", False)):
            r = await client.post(
                "/v1/feedback", json={"request_id": rid, "metric": metric, "value": value}
            )
            assert r.status_code == 200
    store = SQLiteStore(tmp_path / "g.db")
    got = {(f.metric, f.value) for f in await store.feedback("local-vs-remote", None)}
    assert got == {("accepted", False), ("score", 4.0)}
    await store.aclose()


async def test_unknown_request_ids_are_404(tmp_path: Path) -> None:
    async with asgi_client(app_with_store(tmp_path)) as client:
        plain = await client.post("/v1/completions", json={"model": "spare", "prompt": "x"})
        for rid in ("req_nobody", plain.headers["x-request-id"]):  # a plain model: not recorded
            r = await client.post(
                "/v1/feedback", json={"request_id": rid, "metric": "accepted", "value": 1}
            )
            assert_envelope(r, 404, "request_id", "request_not_found")


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"metric": "m", "value": 1}, "request_id"),
        ({"request_id": 7, "metric": "m", "value": 1}, "request_id"),
        ({"request_id": "a b", "metric": "m", "value": 1}, "request_id"),
        ({"request_id": "r", "value": 1}, "metric"),
        ({"request_id": "r", "metric": "", "value": 1}, "metric"),
        ({"request_id": "r", "metric": "x" * 65, "value": 1}, "metric"),
        ({"request_id": "r", "metric": "m"}, "value"),
        ({"request_id": "r", "metric": "m", "value": "yes"}, "value"),
        ({"request_id": "r", "metric": "m", "value": None}, "value"),
        ({"request_id": "r", "metric": "m", "value": 1, "extra": 1}, "extra"),
    ],
)
async def test_bad_feedback_is_400_naming_the_field(
    tmp_path: Path, payload: dict[str, Any], param: str
) -> None:
    async with asgi_client(app_with_store(tmp_path)) as client:
        r = await client.post("/v1/feedback", json=payload)
    assert_envelope(r, 400, param)


async def test_non_finite_and_non_object_bodies_are_400(tmp_path: Path) -> None:
    async with asgi_client(app_with_store(tmp_path)) as client:
        nan = b'{"request_id": "r", "metric": "m", "value": NaN}'
        json_type = {"content-type": "application/json"}
        r = await client.post("/v1/feedback", content=nan, headers=json_type)
        assert r.status_code == 400 and r.json()["error"]["param"] == "value"
        r = await client.post("/v1/feedback", json=[1])
        assert r.status_code == 400


async def test_feedback_needs_an_api_key_when_keys_are_set(tmp_path: Path) -> None:
    app = app_with_store(tmp_path, ServerSettings(api_keys=("k1",)))
    payload = {"request_id": "r", "metric": "m", "value": 1}
    async with asgi_client(app) as client:
        assert (await client.post("/v1/feedback", json=payload)).status_code == 401
        auth = {"authorization": "Bearer k1"}
        r = await client.post("/v1/feedback", json=payload, headers=auth)
        assert r.status_code == 404  # authorized; no such request


async def test_no_store_no_feedback_endpoint(tmp_path: Path) -> None:
    models = [ScriptedBackend(m, "a b") for m in ("local", "remote", "spare")]
    app = stored_app(models, [ab_route()], None, ("local", "remote"))
    async with asgi_client(app) as client:
        r = await client.post("/v1/feedback", json={"request_id": "r", "metric": "m", "value": 1})
        assert r.status_code == 404
        done = await client.post("/v1/completions", json={"model": "smol", "prompt": "x"})
        assert done.is_success
    assert app.state.records is None


async def test_a_store_down_answers_503(tmp_path: Path) -> None:
    app = app_with_store(tmp_path)

    class Down(SQLiteStore):
        async def put_feedback(self, fb: FeedbackRecord) -> bool:
            raise ConnectionError("down")

    async with asgi_client(app) as client:
        app.state.records.store = Down(tmp_path / "g.db")
        r = await client.post("/v1/feedback", json={"request_id": "r", "metric": "m", "value": 1})
    assert_envelope(r, 503, None, "store_unavailable")
    assert "Traceback" not in r.text and str(tmp_path) not in r.text


def parse(store: object) -> Any:
    raw = {"models": [{"id": "m", "backend": "llama_cpp"}], "store": store}
    return parse_config(raw, Path("/etc/gw/gateway.toml"), {})


def test_store_section() -> None:
    assert parse({}).store == StoreSettings("sqlite:///data/gateway.db")
    settings = parse({"url": "postgresql://u@h/db", "record_all": True, "retention_days": 30})
    assert settings.store == StoreSettings("postgresql://u@h/db", True, 30.0)
    assert parse_config(
        {"models": [{"id": "m", "backend": "llama_cpp"}]}, Path("g.toml"), {}
    ).store is None
    for bad, key in (
        ({"url": "mysql://x"}, "store.url"),
        ({"url": "sqlite:///"}, "store.url"),
        ({"record_all": 1}, "store.record_all"),
        ({"retention_days": 0}, "store.retention_days"),
        ({"queue_size": 0}, "store.queue_size"),
        ({"nope": 1}, "store.nope"),
        ("x", "store"),
    ):
        with pytest.raises(ConfigFileError, match=f": {key}: "):
            parse(bad)


async def test_openapi_describes_feedback_when_served(tmp_path: Path) -> None:
    async with asgi_client(app_with_store(tmp_path)) as client:
        doc = (await client.get("/openapi.json")).json()
        r = await client.post("/v1/completions", json={"model": "smol", "prompt": "x"})
        payload = {"request_id": r.headers["x-request-id"], "metric": "m", "value": 0.5}
        answer = await client.post("/v1/feedback", json=payload)
    op = doc["paths"]["/v1/feedback"]["post"]
    request_schema = op["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(payload, request_schema)
    answer_schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(answer.json(), answer_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "value": "x"}, request_schema)
