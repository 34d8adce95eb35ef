"""POST /v1/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.handlers.common import api_endpoint, request_limits
from gateway.handlers.serving import serve_call
from gateway.openai.completions import CompletionEncoder, parse_completion_request
from gateway.openai.params import parse_json_body


@api_endpoint
async def create_completion(request: Request) -> Response:
    call = parse_completion_request(parse_json_body(await request.body()), request_limits(request))
    return await serve_call(request, call, CompletionEncoder)
