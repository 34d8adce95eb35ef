"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.handlers.common import api_endpoint, request_limits
from gateway.handlers.serving import serve_call
from gateway.openai.chat import ChatEncoder, parse_chat_request
from gateway.openai.params import parse_json_body


@api_endpoint
async def create_chat_completion(request: Request) -> Response:
    call = parse_chat_request(parse_json_body(await request.body()), request_limits(request))
    return await serve_call(request, call, ChatEncoder)
