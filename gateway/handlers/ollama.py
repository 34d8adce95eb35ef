"""Ollama's API for editors and local-LLM clients (Twinny, Zed, Continue, the `ollama`
Python package): /api/generate, /api/chat, /api/tags, /api/ps, /api/show,
/api/version. Generation goes through the same serving path as /v1/* (routes,
experiments, admission, metrics, the access line); streams are JSON lines. Every
error is Ollama's `{"error": "..."}` with the status the gateway chose. The gateway
does not pull models: /api/pull answers 400 saying so."""

from __future__ import annotations

import functools
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.base import ModelInfo
from backends.errors import InvalidRequest
from gateway.errors import APIError, invalid, model_not_found
from gateway.framing import OLLAMA_NDJSON
from gateway.handlers.common import Endpoint, api_endpoint, read_call, registry
from gateway.handlers.serving import serve_call
from gateway.ollama.calls import OllamaCall, parse_chat, parse_generate
from gateway.ollama.encoder import OllamaEncoder, created_at
from gateway.ollama.models import OLLAMA_VERSION, ps_json, show_json, tags_json
from gateway.openai.params import parse_json_body
from gateway.routing import Router


def ollama_endpoint(handler: Endpoint) -> Endpoint:
    """The OpenAI error envelope of `api_endpoint`, reshaped as Ollama's."""
    wrapped = api_endpoint(handler)

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        response = await wrapped(request)
        if response.status_code < 400 or not isinstance(response, JSONResponse):
            return response
        body = json.loads(bytes(response.body))
        message = body.get("error", {}).get("message", "error")
        headers = {  # Retry-After, a route's headers
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        return JSONResponse({"error": message}, response.status_code, headers=headers)

    return wrapper


def resolve(request: Request, name: str) -> str:
    """A model or route clients may name; Ollama clients add the tag `:latest`."""
    router: Router = request.state.router
    if router.is_public(name):
        return name
    base, _, tag = name.rpartition(":")
    if base and tag == "latest" and router.is_public(base):
        return base
    raise model_not_found(name)


def _listed(request: Request) -> list[tuple[str, ModelInfo | None]]:
    router: Router = request.state.router
    by_id = {m.id: m for m in registry(request).models}
    out = []
    for name in router.public_ids:
        model = by_id[router.first_model(name)]
        out.append((name, model.backend.info() if model.state == "ready" else None))
    return out


async def _serve(request: Request, call: OllamaCall) -> Response:
    call.model = resolve(request, call.model)
    return await serve_call(request, call, OllamaEncoder, OLLAMA_NDJSON)


@ollama_endpoint
async def generate(request: Request) -> Response:
    call = await read_call(request, parse_generate)
    if not call.prompt and call.suffix is None:
        return _loaded(request, call)
    return await _serve(request, call)


@ollama_endpoint
async def chat(request: Request) -> Response:
    call = await read_call(request, parse_chat)
    if not call.messages:
        return _loaded(request, call)
    return await _serve(request, call)


def _loaded(request: Request, call: OllamaCall) -> Response:
    """Ollama's "load the model" request (an empty prompt, or no messages): the models
    of the configuration are loaded at startup, so it is answered at once."""
    model = resolve(request, call.model)
    router: Router = request.state.router
    registry(request).get(router.first_model(model))  # 503 while it is still loading
    body: dict[str, object] = {"model": model, "created_at": created_at()}
    if call.operation == "chat":
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    body.update(done=True, done_reason="load")
    return JSONResponse(body)


@ollama_endpoint
async def tags(request: Request) -> Response:
    return JSONResponse(tags_json(_listed(request)))


@ollama_endpoint
async def ps(request: Request) -> Response:
    return JSONResponse(ps_json([(n, i) for n, i in _listed(request) if i is not None]))


@ollama_endpoint
async def show(request: Request) -> Response:
    body = parse_json_body(await request.body())
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("Missing required parameter: 'model'.", "model")
    model = resolve(request, name)
    router: Router = request.state.router
    backend = registry(request).get(router.first_model(model))
    try:
        template = backend.tokenizer_info().chat_template
    except InvalidRequest:
        template = None
    return JSONResponse(show_json(model, backend.info(), template))


@ollama_endpoint
async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION})


@ollama_endpoint
async def not_managed(request: Request) -> Response:
    raise APIError(
        400,
        f"{request.url.path}: this gateway does not download or manage models; add the "
        "model to the gateway's configuration file instead.",
        "invalid_request_error",
        None,
        "not_supported",
    )


def ollama_routes() -> list[Route]:
    return [
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/pull", not_managed, methods=["POST"]),
    ]
