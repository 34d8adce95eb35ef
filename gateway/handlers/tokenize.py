"""POST /tokenize, POST /detokenize, GET /tokenizer_info (also under /v1/): the served
model's own tokenizer, so clients (evaluation harnesses) count tokens as it does
without downloading one. The backend does the work off the event loop."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.base import Backend
from gateway.errors import model_not_found
from gateway.handlers.common import api_endpoint, registry
from gateway.llamacpp import tokenize as wire
from gateway.middleware import access_record
from gateway.openai.params import parse_json_body
from gateway.routing import Router


def _backend(request: Request, model: str | None) -> tuple[str, Backend]:
    """The named model or route (a route's first model tokenizes: its variants should
    share a tokenizer), or the first one clients may name. Hidden models are not
    addressable here either."""
    router: Router = request.state.router
    if model is None:
        public = router.public_ids
        if not public:
            raise model_not_found("")
        model = public[0]
    if not router.is_public(model):
        raise model_not_found(model)
    access_record(request.scope).model = model
    return model, registry(request).get(router.first_model(model))


@api_endpoint
async def tokenize(request: Request) -> Response:
    call = wire.parse_tokenize(parse_json_body(await request.body()))
    _, backend = _backend(request, call.model)
    tokens = await backend.tokenize(call.text, call.add_special, call.parse_special)
    pieces = await backend.token_pieces(tokens) if call.with_pieces else None
    return JSONResponse(wire.tokenize_json(tokens, pieces, backend.capabilities.max_context))


@api_endpoint
async def detokenize(request: Request) -> Response:
    call = wire.parse_detokenize(parse_json_body(await request.body()))
    _, backend = _backend(request, call.model)
    return JSONResponse(wire.detokenize_json(await backend.detokenize(call.tokens)))


@api_endpoint
async def tokenizer_info(request: Request) -> Response:
    model, backend = _backend(request, request.query_params.get("model"))
    return JSONResponse(wire.tokenizer_info_json(model, backend.tokenizer_info()))
