"""The upstream's side of the wire: neutral request -> OpenAI JSON body, and SSE lines /
OpenAI chunks -> neutral pieces. This backend's only knowledge of OpenAI's format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from backends.base import FinishReason, GenerationRequest, SamplingParams, Usage

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
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


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


def read_chunk(payload: Any, is_chat: bool) -> ChunkPiece:
    """Raise ValueError when the payload is not shaped like a completion (chunk)."""
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    piece = ChunkPiece()
    usage = payload.get("usage")
    if isinstance(usage, dict):
        piece.usage = Usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
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
        message = choice.get("delta") or choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = choice.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError("text is not a string")
    piece.text = text or ""
    reason = choice.get("finish_reason")
    if reason:
        piece.finish_reason = FINISH_REASONS.get(str(reason), "stop")
    return piece


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined with newlines), from
    the raw body bytes; comments, `event:`, `id:` and `retry:` fields are skipped.
    Splitting bytes directly avoids httpx's per-line text decoding on the hot path."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            data = _event_data(event)
            if data is not None:
                yield data
    if buffer.strip():
        data = _event_data(buffer)
        if data is not None:
            yield data


def _event_data(event: bytes) -> str | None:
    if event.startswith(b"data: ") and b"\n" not in event:  # the usual one-line event
        return event[6:].decode()
    data = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in event.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(data).decode() if data else None
