"""The upstream's side of the wire: neutral request -> OpenAI JSON body, and SSE lines /
OpenAI chunks -> neutral pieces. This backend's only knowledge of OpenAI's format."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from backends.base import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    Usage,
)
from backends.openai_http.logprobs import chat_logprobs, legacy_logprobs

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "eos": "stop",  # some engines name the end-of-sequence token
    "eos_token": "stop",
    "stop_sequence": "stop",  # TGI
}


def build_body(
    request: GenerationRequest, model: str, stream: bool, include_usage: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if request.is_chat:
        body["messages"] = [message(m) for m in request.messages]
    else:
        prompt = request.prompt
        body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
    body.update(sampling_fields(request.params))
    if request.logprobs is not None:  # only asked when the options say the upstream can
        if request.is_chat:
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        else:
            body["logprobs"] = request.logprobs
    if request.echo:
        body["echo"] = True
    if request.suffix is not None:
        body["suffix"] = request.suffix
    if request.constraint is not None:  # only when the options say the upstream can
        body["response_format"] = response_format(request.constraint)
    if request.tools:  # only when the options say the upstream can
        body.update(tool_fields(request))
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def message(m: ChatMessage) -> dict[str, Any]:
    item: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        item["name"] = m.name
    if m.tool_calls:
        item["content"] = m.content or None
        item["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        item["tool_call_id"] = m.tool_call_id
    return item


def tool_fields(request: GenerationRequest) -> dict[str, Any]:
    tools = []
    for t in request.tools:
        function: dict[str, Any] = {"name": t.name}
        if t.description is not None:
            function["description"] = t.description
        if t.parameters:
            function["parameters"] = dict(t.parameters)
        if t.strict:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    choice = request.tool_choice
    return {
        "tools": tools,
        "tool_choice": (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "function"
            else choice.mode
        ),
        "parallel_tool_calls": request.parallel_tool_calls,
    }


def response_format(constraint: OutputConstraint) -> dict[str, Any]:
    if constraint.kind == "json_object":
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": constraint.name or "output", "schema": constraint.schema}
    if constraint.strict:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


def sampling_fields(params: SamplingParams) -> dict[str, Any]:
    """OpenAI's fields always; the common extensions (top_k, min_p, repeat_penalty, which
    vLLM and llama.cpp accept) only when set, so strict upstreams never see them."""
    fields: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p}
    if params.max_tokens is not None:
        fields["max_tokens"] = params.max_tokens
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.seed is not None:
        fields["seed"] = params.seed
    if params.presence_penalty:
        fields["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        fields["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        fields["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
    if params.top_k:
        fields["top_k"] = params.top_k
    if params.min_p:
        fields["min_p"] = params.min_p
    if params.repeat_penalty != 1.0:
        fields["repeat_penalty"] = params.repeat_penalty
    return fields


@dataclass(slots=True)
class ChunkPiece:
    """What one OpenAI chunk (or whole response) says about the single choice."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    # tool-call pieces: (index, id, name, arguments text), whole or streamed deltas
    tool_calls: tuple[tuple[int, str | None, str | None, str], ...] = ()


MAX_TOKEN_COUNT = 2**40  # far above any context, far below what breaks arithmetic


def read_chunk(payload: Any, is_chat: bool) -> ChunkPiece:
    """Raise ValueError when the payload is not shaped like a completion (chunk): every
    field read here is type-checked, so a hostile upstream is a clean 502, never a crash."""
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    piece = ChunkPiece()
    usage = payload.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise ValueError("usage is not an object")
        piece.usage = Usage(
            _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        )
    choices = payload.get("choices")
    if not isinstance(choices, list):
        raise ValueError("no choices")
    if not choices:
        return piece  # the usage chunk
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ValueError("a choice is not an object")
    if is_chat:
        message = choice.get("delta")
        if message is None:
            message = choice.get("message")
        if message is None:
            message = {}
        if not isinstance(message, dict):
            raise ValueError("a delta is not an object")
        text = message.get("content")
        piece.tool_calls = _tool_call_pieces(message.get("tool_calls"))
    else:
        text = choice.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise ValueError("text is not a string")
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise ValueError("text is not valid Unicode") from None
    piece.text = text or ""
    read_logprobs = chat_logprobs if is_chat else legacy_logprobs
    piece.logprobs = read_logprobs(choice.get("logprobs"))
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("finish_reason is not a string")
    if reason:
        piece.finish_reason = FINISH_REASONS.get(reason, "stop")
    return piece


def _tool_call_pieces(value: Any) -> tuple[tuple[int, str | None, str | None, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("tool_calls is not a list")
    pieces = []
    for position, call in enumerate(value):
        if not isinstance(call, dict):
            raise ValueError("a tool call is not an object")
        index = call.get("index", position)
        function = call.get("function") or {}
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024:
            raise ValueError("a tool call's index is not a small integer")
        if not isinstance(function, dict):
            raise ValueError("a tool call's function is not an object")
        call_id, name = call.get("id"), function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        for field, item in (("id", call_id), ("name", name), ("arguments", arguments)):
            if item is not None and not isinstance(item, str):
                raise ValueError(f"a tool call's {field} is not a string")
        pieces.append((index, call_id, name, arguments or ""))
    return tuple(pieces)


class ToolCallAccumulator:
    """Tool-call pieces gathered by index (a streamed call's name and id come first,
    its arguments in fragments) into whole calls, in index order."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}

    def add(self, pieces: tuple[tuple[int, str | None, str | None, str], ...]) -> None:
        for index, call_id, name, arguments in pieces:
            call = self._calls.setdefault(index, ["", "", ""])
            if call_id:
                call[0] = call_id
            if name:
                call[1] += name if not call[1] or call[1] != name else ""
            call[2] += arguments

    def calls(self) -> tuple[ToolCall, ...]:
        """Raises ValueError for a call without a name. A call the upstream sent without
        an id gets one."""
        out = []
        for index in sorted(self._calls):
            call_id, name, arguments = self._calls[index]
            if not name:
                raise ValueError("a tool call has no function name")
            call_id = call_id or "call_" + uuid.uuid4().hex[:24]
            out.append(ToolCall(call_id, name, arguments or "{}"))
        return tuple(out)


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():  # 12.0: some servers
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"usage.{key} is not an integer")
    if not 0 <= value <= MAX_TOKEN_COUNT:
        raise ValueError(f"usage.{key} is out of range")
    return value


class EventTooLarge(ValueError):
    pass


async def sse_data(chunks: AsyncIterator[bytes], max_event_bytes: int) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined with newlines), from
    the raw body bytes; comments, `event:`, `id:` and `retry:` fields are skipped.
    Memory stays bounded: an event whose lines add up to over `max_event_bytes` (or a
    line that never ends) raises EventTooLarge, and bytes that are not UTF-8 raise
    ValueError. Splitting bytes directly avoids httpx's per-line text decoding on the
    hot path."""
    buffer = bytearray()
    data: bytearray | None = None  # None: the event has no data field yet
    size = 0  # raw bytes of the event's lines so far
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if not line or line == b"\r":
                if data is not None:
                    yield _decode(data)
                data, size = None, 0
                continue
            size += len(line) + 1
            if size > max_event_bytes:
                raise EventTooLarge(f"an event is over {max_event_bytes} bytes")
            if line.startswith(b"data:"):
                data = _add_data(data, line)
        del buffer[:start]
        if len(buffer) + size > max_event_bytes:
            raise EventTooLarge(f"an event is over {max_event_bytes} bytes")
    if buffer.startswith(b"data:"):  # the body ended without a newline
        data = _add_data(data, buffer)
    if data is not None:
        yield _decode(data)


def _add_data(data: bytearray | None, line: bytearray) -> bytearray:
    value = line[6:] if line.startswith(b"data: ") else line[5:]
    if value.endswith(b"\r"):
        del value[-1:]
    if data is None:
        return value
    data += b"\n"
    data += value
    return data


def _decode(data: bytearray) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValueError("an event is not valid UTF-8") from None
