"""llama.cpp server's endpoints for editors: POST /completion, POST /infill, GET /props.
They go through the same serving path as /v1/* (routes, experiments, admission,
metrics, the access line); errors keep the OpenAI envelope, as llama.cpp's server's do."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.errors import InvalidRequest
from gateway.errors import model_not_found
from gateway.framing import LLAMACPP_SSE
from gateway.handlers.common import api_endpoint, read_call, registry
from gateway.handlers.serving import serve_call
from gateway.llamacpp.calls import parse_completion, parse_infill
from gateway.llamacpp.encoder import NativeEncoder
from gateway.llamacpp.props import props_json
from gateway.routing import Router


def default_model(request: Request) -> str:
    """The model a request names nothing for: the first one clients may name."""
    router: Router = request.state.router
    public = router.public_ids
    if not public:
        raise model_not_found("")
    return public[0]


@api_endpoint
async def completion(request: Request) -> Response:
    default = default_model(request)
    call = await read_call(request, lambda body, limits: parse_completion(body, limits, default))
    return await serve_call(request, call, NativeEncoder, LLAMACPP_SSE)


@api_endpoint
async def infill(request: Request) -> Response:
    default = default_model(request)
    call = await read_call(request, lambda body, limits: parse_infill(body, limits, default))
    return await serve_call(request, call, NativeEncoder, LLAMACPP_SSE)


@api_endpoint
async def props(request: Request) -> Response:
    router: Router = request.state.router
    model = request.query_params.get("model") or default_model(request)
    if not router.is_public(model):
        raise model_not_found(model)
    backend = registry(request).get(router.first_model(model))
    try:
        template = backend.tokenizer_info().chat_template
    except InvalidRequest:  # a backend without a tokenizer of its own
        template = None
    return JSONResponse(props_json(model, backend.info(), template))


def llamacpp_routes() -> list[Route]:
    return [
        Route("/completion", completion, methods=["POST"]),
        Route("/infill", infill, methods=["POST"]),
        Route("/props", props, methods=["GET"]),
    ]
