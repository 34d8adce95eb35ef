"""POST /v1/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.handlers.common import api_endpoint, read_call
from gateway.handlers.serving import serve_call
from gateway.openai.completions import CompletionEncoder, parse_completion_request


@api_endpoint
async def create_completion(request: Request) -> Response:
    call = await read_call(request, parse_completion_request)
    return await serve_call(request, call, CompletionEncoder)
