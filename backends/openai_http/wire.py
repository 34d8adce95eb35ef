"""The upstream's side of the wire: neutral request -> OpenAI JSON body, and SSE lines /
OpenAI chunks -> neutral pieces. This backend's only knowledge of OpenAI's format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from backends.base import (
    FinishReason,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TokenLogprob,
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
        body["messages"] = [
            {"role": m.role, "content": m.content, **({"name": m.name} if m.name else {})}
            for m in request.messages
        ]
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
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


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
