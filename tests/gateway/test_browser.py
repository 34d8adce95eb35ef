"""A web page the user visits must not be able to use a gateway on their machine.

Each test sends what a browser sends: a cross-site "simple" POST (`text/plain` body, a
foreign `Origin`, no preflight), a DNS-rebound request (`Host: evil.attacker.example`
on 127.0.0.1), CORS preflights. The gateway is the real app over a scripted backend,
served by its own server on a loopback socket."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from gateway.config import ServerSettings
from tests.support.edge import EdgeServer, settings
from tests.support.inprocess import ScriptedBackend, lifespan, scripted_app

BODY = {"model": "m", "prompt": "hi", "max_tokens": 2}
EVIL = "https://evil.attacker.example"
APP = "https://app.example.com"


def envelope(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert r.headers["x-request-id"]
    return error["message"]


@pytest.fixture(scope="module")
def backend() -> ScriptedBackend:
    return ScriptedBackend("m")


@pytest.fixture(scope="module")
def plain(backend: ScriptedBackend) -> Iterator[EdgeServer]:
    """No API keys, no CORS, no allowed_hosts: the default a user runs at home."""
    with EdgeServer(scripted_app(backend)) as server:
        yield server


def post(server: EdgeServer, path: str = "/v1/completions", **kw: object) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", **kw)  # type: ignore[arg-type]


# -- content type ---------------------------------------------------------------------


def test_cross_site_text_plain_post_is_refused(plain: EdgeServer, backend: ScriptedBackend) -> None:
    before = len(backend.calls.requests)
    # fetch(url, {method: "POST", body: JSON.stringify(...)}) from another site: no
    # preflight, Content-Type text/plain;charset=UTF-8, the page's Origin.
    r = post(
        plain,
        content=json.dumps(BODY),
        headers={"content-type": "text/plain;charset=UTF-8", "origin": EVIL},
    )
    message = envelope(r, 415, "unsupported_media_type")
    assert "application/json" in message and "text/plain" in message
    assert "access-control-allow-origin" not in r.headers
    assert len(backend.calls.requests) == before  # nothing was generated


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",  # an HTML form, or curl -d without -H
        "multipart/form-data; boundary=x",
        "text/plain",
        None,
    ],
)
def test_post_bodies_must_be_declared_json(plain: EdgeServer, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
        r = post(plain, path, content=json.dumps(BODY), headers=headers)
        envelope(r, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_are_accepted(plain: EdgeServer, content_type: str) -> None:
    r = post(plain, content=json.dumps(BODY), headers={"content-type": content_type})
    assert r.status_code == 200, r.text


# -- Host (DNS rebinding) ---------------------------------------------------------------


def test_rebound_host_is_refused_on_loopback(plain: EdgeServer) -> None:
    # evil.attacker.example first resolved to the attacker, now to 127.0.0.1: the browser
    # treats the gateway as same-origin with the attacker's page, but the Host says so.
    headers = {"host": "evil.attacker.example", "content-type": "application/json"}
    r = post(plain, content=json.dumps(BODY), headers=headers)
    message = envelope(r, 403, "host_not_allowed")
    assert "allowed_hosts" in message
    r = httpx.get(f"{plain.base_url}/v1/models", headers={"host": "evil.attacker.example:8000"})
    envelope(r, 403, "host_not_allowed")


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:{port}", "127.0.0.1:{port}", "127.5.6.7", "[::1]:{port}",
             "ui.localhost:{port}", "LOCALHOST."],
)  # fmt: skip
def test_loopback_hosts_are_accepted(plain: EdgeServer, host: str) -> None:
    r = httpx.get(f"{plain.base_url}/v1/models", headers={"host": host.format(port=plain.port)})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["", "127.0.0.1:abc", "[::1", "a:b:c"])
def test_malformed_hosts_are_refused(plain: EdgeServer, host: str) -> None:
    envelope(httpx.get(f"{plain.base_url}/health", headers={"host": host}), 403, "host_not_allowed")


def test_allowed_hosts_name_the_hosts_to_answer() -> None:
    app = scripted_app(
        ScriptedBackend("m"), settings(allowed_hosts=("gateway.example.com", "*.internal"))
    )
    with EdgeServer(app) as server:
        url = f"{server.base_url}/v1/models"
        for ok in ("gateway.example.com", "GATEWAY.example.com:443", "a.b.internal", "localhost"):
            assert httpx.get(url, headers={"host": ok}).status_code == 200, ok
        for bad in ("evil.attacker.example", "internal", "gateway.example.com.evil.example"):
            envelope(httpx.get(url, headers={"host": bad}), 403, "host_not_allowed")


def test_allowed_hosts_star_turns_the_check_off() -> None:
    app = scripted_app(ScriptedBackend("m"), settings(allowed_hosts=("*",)))
    with EdgeServer(app) as server:
        r = httpx.get(f"{server.base_url}/v1/models", headers={"host": "evil.attacker.example"})
        assert r.status_code == 200


@pytest.mark.anyio
async def test_host_is_not_checked_for_requests_arriving_on_other_addresses() -> None:
    """Bound to 0.0.0.0, a request that came in on a LAN address may use any name (DNS
    rebinding can only aim a browser at an address it reaches; on a LAN the operator
    sets allowed_hosts)."""
    app = scripted_app(ScriptedBackend("m"))
    async with lifespan(app) as state:

        async def with_state(scope, receive, send):  # type: ignore[no-untyped-def]
            await app(scope if scope["type"] != "http" else {**scope, "state": dict(state)},
                      receive, send)  # fmt: skip

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3") as c:
            r = await c.get("/v1/models", headers={"host": "gpu-box.lan"})
            assert r.status_code == 200
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            r = await c.get("/v1/models", headers={"host": "gpu-box.lan"})
            assert r.status_code == 403


# -- CORS ---------------------------------------------------------------------------------


def preflight(server: EdgeServer, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        f"{server.base_url}/v1/chat/completions",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization,content-type,x-stainless-os",
        },
    )


def test_without_cors_origins_preflights_are_refused(plain: EdgeServer) -> None:
    r = preflight(plain, APP)
    message = envelope(r, 403, "cors_not_allowed")
    assert "cors_origins" in message
    assert not [h for h in r.headers if h.startswith("access-control-")]
    r = httpx.get(f"{plain.base_url}/v1/models", headers={"origin": APP})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.startswith("access-control-")]


@pytest.fixture(scope="module")
def cors() -> Iterator[EdgeServer]:
    cfg = settings(cors_origins=(APP, "http://localhost:3000"), api_keys=("sk-cors",))
    with EdgeServer(scripted_app(ScriptedBackend("m"), cfg)) as server:
        yield server


def test_preflight_of_a_listed_origin(cors: EdgeServer) -> None:
    r = preflight(cors, APP)  # no Authorization: browsers never send it on a preflight
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert int(r.headers["access-control-max-age"]) > 0
    assert "origin" in r.headers["vary"].lower()
    assert r.content == b""


def test_preflight_of_another_origin_is_refused(cors: EdgeServer) -> None:
    for origin in (EVIL, "https://app.example.com.evil.example", "null"):
        r = preflight(cors, origin)
        envelope(r, 403, "cors_not_allowed")
        assert "access-control-allow-origin" not in r.headers
    envelope(preflight(cors, APP, method="DELETE"), 403, "cors_not_allowed")


def test_cross_origin_request_of_a_listed_origin(cors: EdgeServer) -> None:
    r = post(
        cors,
        json=BODY,
        headers={"origin": APP, "authorization": "Bearer sk-cors"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    assert "origin" in r.headers["vary"].lower()
    # errors too, so that the page can read them
    r = post(cors, json=BODY, headers={"origin": APP})
    envelope(r, 401, "invalid_api_key")
    assert r.headers["access-control-allow-origin"] == APP
    # another origin gets no grant (the browser hides the response from its page)
    r = post(cors, json=BODY, headers={"origin": EVIL, "authorization": "Bearer sk-cors"})
    assert "access-control-allow-origin" not in r.headers


def test_star_origin() -> None:
    app = scripted_app(ScriptedBackend("m"), settings(cors_origins=("*",)))
    with EdgeServer(app) as server:
        r = preflight(server, EVIL)
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


# -- API keys on every endpoint that serves the model, /ready without details -------


@pytest.fixture(scope="module")
def keyed() -> Iterator[EdgeServer]:
    backend = ScriptedBackend("m", stats={"replicas": [{"url": "http://10.0.0.5:8000/v1"}]})
    with EdgeServer(scripted_app(backend, ServerSettings(api_keys=("sk-1",)))) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/tokenize"),
        ("POST", "/detokenize"),
        ("GET", "/tokenizer_info"),
        ("POST", "/v1/tokenize"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/backends"),
    ],
)
def test_api_keys_guard_the_model_endpoints(keyed: EdgeServer, method: str, path: str) -> None:
    kw = {"json": {"model": "m", "content": "hi", "tokens": [1]}} if method == "POST" else {}
    r = httpx.request(method, f"{keyed.base_url}{path}", **kw)  # type: ignore[arg-type]
    envelope(r, 401, "invalid_api_key")
    r = httpx.request(
        method, f"{keyed.base_url}{path}", headers={"authorization": "Bearer sk-1"}, **kw
    )  # type: ignore[arg-type]
    assert r.status_code != 401


def test_ready_without_a_key_says_only_ready_or_not(keyed: EdgeServer) -> None:
    r = httpx.get(f"{keyed.base_url}/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}
    r = httpx.get(f"{keyed.base_url}/ready", headers={"authorization": "Bearer wrong"})
    assert r.json() == {"status": "ready"}
    r = httpx.get(f"{keyed.base_url}/ready", headers={"authorization": "Bearer sk-1"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["models"] == {"m": "ready"}
    assert "10.0.0.5" in r.text  # the replica list, for key holders only
    assert httpx.get(f"{keyed.base_url}/health").status_code == 200


def test_ready_without_keys_configured_shows_details(plain: EdgeServer) -> None:
    assert httpx.get(f"{plain.base_url}/ready").json()["models"] == {"m": "ready"}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods_get_405_not_415(plain: EdgeServer, method: str) -> None:
    # Only POST can reach the gateway cross-site without a preflight; other methods
    # are answered by the router, which says the method is not allowed.
    r = httpx.request(method, f"{plain.base_url}/v1/models", content=b"x")
    envelope(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]
