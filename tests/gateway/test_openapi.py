"""GET /openapi.json: the gateway's own API as OpenAPI 3.1, and a schemathesis run
against a live gateway (uvicorn on loopback, a scripted backend) that must find no
server error and no response that contradicts the document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from backends.base import Capabilities
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.handlers.openapi import served_paths
from gateway.openapi import described_paths
from gateway.registry import ModelRegistry, ServedModel
from tests.support.inprocess import ScriptedBackend, ThreadedServer

MODEL = "scripted"


class EveryFeature(ScriptedBackend):
    """Declares every capability, so that requests reach the backend instead of
    stopping at the capability check."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            streaming=True,
            token_prompts=True,
            logprobs=True,
            echo=True,
            suffix=True,
            chat_template=True,
            max_context=4096,
        )


def _app() -> Any:
    config = GatewayConfig(ServerSettings(), (), Path("inline.toml"))
    return create_app(config, ModelRegistry([ServedModel(MODEL, EveryFeature(MODEL))]))


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(_app()) as server:
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.base_url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the scripted gateway never became ready"
            time.sleep(0.02)
        yield server


@pytest.fixture(scope="module")
def doc(server: ThreadedServer) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_document_is_openapi_3_1_with_valid_schemas(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema({**schema, "title": name})
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert ops and all("4XX" in op["responses"] and "5XX" in op["responses"] for op in ops)


def test_every_route_of_the_app_is_described(doc: dict[str, Any]) -> None:
    """A route added without its description fails here; the served document lists
    exactly the routes the app has."""
    routes = served_paths(_app().routes)
    assert set(routes) <= set(described_paths()), set(routes) - set(described_paths())
    assert set(doc["paths"]) == set(routes)


def test_streaming_and_extensions_are_described(doc: dict[str, Any]) -> None:
    completions = doc["paths"]["/v1/completions"]["post"]
    assert "text/event-stream" in completions["responses"]["200"]["content"]
    fields = doc["components"]["schemas"]["CreateCompletionRequest"]["properties"]
    for name in ("top_k", "min_p", "repeat_penalty", "suffix", "best_of", "logit_bias"):
        assert name in fields
    chat = doc["components"]["schemas"]["CreateChatCompletionRequest"]["properties"]
    assert chat["top_logprobs"]["anyOf"][0]["maximum"] == 20
    error = doc["components"]["schemas"]["ErrorResponse"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]


def test_responses_match_the_document(server: ThreadedServer, doc: dict[str, Any]) -> None:
    """Hand-picked requests whose responses must validate (the fuzzing below may not
    reach a 200 for every operation)."""
    base = server.base_url
    checks = [
        ("post", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2}, "200"),
        (
            "post",
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            "200",
        ),
        ("post", "/v1/completions", {"model": MODEL, "prompt": 3}, "4XX"),
        ("post", "/v1/completions", {"model": "nope", "prompt": "x"}, "4XX"),
        ("get", "/v1/models", None, "200"),
        ("get", f"/v1/models/{MODEL}", None, "200"),
        ("get", "/v1/models/nope", None, "4XX"),
        ("get", "/v1/backends", None, "200"),
        ("get", "/health", None, "200"),
        ("get", "/ready", None, "200"),
    ]
    for method, path, body, status in checks:
        r = httpx.request(method, base + path, json=body, timeout=10)
        assert str(r.status_code) == status or (status == "4XX" and 400 <= r.status_code < 500)
        spec = doc["paths"][path if path in doc["paths"] else "/v1/models/{model_id}"][method]
        schema = spec["responses"][status]["content"]["application/json"]["schema"]
        _validate(r.json(), schema, doc)


def _validate(instance: Any, schema: dict[str, Any], doc: dict[str, Any]) -> None:
    root = {**schema, "components": doc["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)


def _pinned(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with request bodies' `model` pinned to the one served model:
    random model names would only ever reach the 404 path. Negative examples still
    send other names."""
    doc = json.loads(json.dumps(doc))
    bodies: list[dict[str, Any]] = []
    for item in doc["paths"].values():
        for op in item.values():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            bodies.append(body.get("schema", {}))
    for name in ("CreateCompletionRequest", "CreateChatCompletionRequest"):
        bodies.append(doc["components"]["schemas"][name])
    for schema in bodies:
        if "model" in schema.get("properties", {}):
            schema["properties"]["model"] = {"enum": [MODEL]}
    return doc


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_or_schema_violations(
    server: ThreadedServer, doc: dict[str, Any], tmp_path: Path
) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(_pinned(doc)))
    cli = Path(sys.executable).parent / "schemathesis"
    checks = (
        "not_a_server_error,response_schema_conformance,content_type_conformance,"
        "status_code_conformance"
    )
    cmd = [
        str(cli), "run", str(spec), "--url", server.base_url,
        "--checks", checks, "--phases", "examples,coverage,fuzzing",
        "--max-examples", "30", "--seed", "1", "--workers", "1",
        "--generation-database", "none", "--request-timeout", "20",
        "--no-color", "--continue-on-failure",
        "--suppress-health-check", "all",
    ]  # fmt: skip
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]


def test_method_not_allowed_says_which_are(server: ThreadedServer) -> None:
    """RFC 9110: a 405 lists the allowed methods (schemathesis' unsupported_method)."""
    r = httpx.request("DELETE", f"{server.base_url}/v1/models", timeout=10)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
