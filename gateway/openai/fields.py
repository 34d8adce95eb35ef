"""What the gateway does with each field of a request body, so that nothing a client
asks for is dropped silently.

Every field of OpenAI's `CreateCompletionRequest` and `CreateChatCompletionRequest` is
in one of three classes:
- honoured: read by `completions.py` / `chat.py` and acted on;
- accepted: changes nothing in OpenAI's answer either (identifiers for OpenAI's own
  bookkeeping, caching hints: prefix reuse here is automatic), so it is read and left;
- a feature: something a backend must do for the answer to be right (structured
  output, tool calls, images, audio, ...). The request names the feature it needs;
  the call's capability check refuses it with a 400 naming the field unless the
  backend lists the feature in `Capabilities.features`.
Any other field is unknown: ignored, and its name logged at debug level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from backends.base import Capabilities
from gateway.errors import APIError, invalid

log = structlog.get_logger("gateway.openai")

# Fields both endpoints honour (the extensions top_k, min_p, repeat_penalty included).
SAMPLING = {
    "model",
    "stream",
    "stream_options",
    "n",
    "stop",
    "seed",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "top_k",
    "min_p",
    "repeat_penalty",
}
COMPLETION_HONOURED = SAMPLING | {"prompt", "max_tokens", "best_of", "echo", "logprobs", "suffix"}
CHAT_HONOURED = SAMPLING | {
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
}
# No effect on the answer at OpenAI either: accepted, no effect here by design.
ACCEPTED = {"metadata", "safety_identifier", "prompt_cache_key"}


@dataclass(frozen=True, slots=True)
class Wanted:
    """A feature a request needs from the backend; `param` is the field that asks."""

    feature: str
    param: str
    what: str  # how the refusal describes the request, e.g. "tool calling"


def _is_none_or(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or value in allowed


def _plain_response_format(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise invalid(
            "Invalid 'response_format': expected an object with a 'type' (text, "
            "json_object or json_schema).",
            "response_format",
        )
    return value["type"] == "text"


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


# field -> (feature, description, "the value asks for nothing" test)
_CHAT_FEATURES: dict[str, tuple[str, str, Callable[[Any], bool]]] = {
    "response_format": ("response_format", "structured output", _plain_response_format),
    "tools": ("tools", "tool calling", _empty),
    "tool_choice": ("tools", "tool calling", _is_none_or("none", "auto")),
    "parallel_tool_calls": ("tools", "tool calling", _is_none_or()),
    "functions": ("functions", "function calling", _empty),
    "function_call": ("functions", "function calling", _is_none_or("none", "auto")),
    "audio": ("audio", "audio output", _is_none_or()),
    "modalities": ("audio", "audio output", _is_none_or(["text"])),
    "prediction": ("prediction", "predicted outputs", _is_none_or()),
    "reasoning_effort": ("reasoning_effort", "reasoning effort", _is_none_or()),
    "verbosity": ("verbosity", "verbosity", _is_none_or()),
    "web_search_options": ("web_search", "web search", _is_none_or()),
    "moderation": ("moderation", "moderation", _is_none_or()),
    "store": ("store", "stored completions", _is_none_or(False)),
    "service_tier": ("service_tier", "service tiers", _is_none_or("auto", "default")),
    "prompt_cache_retention": ("cache_retention", "cache retention", _is_none_or("in_memory")),
    "prompt_cache_options": ("cache_retention", "cache retention", _empty),
}
# Constrained decoding as peers spell it (llama.cpp's server, vLLM), on both endpoints.
_GRAMMAR_FIELDS = (
    "grammar",
    "json_schema",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
)
_COMPLETION_FEATURES = {"response_format": _CHAT_FEATURES["response_format"]}

CHAT_KNOWN = CHAT_HONOURED | ACCEPTED | set(_CHAT_FEATURES) | set(_GRAMMAR_FIELDS)
COMPLETION_KNOWN = COMPLETION_HONOURED | set(_COMPLETION_FEATURES) | set(_GRAMMAR_FIELDS)


def chat_features(body: dict[str, Any]) -> list[Wanted]:
    return _wanted(body, _CHAT_FEATURES, CHAT_KNOWN)


def completion_features(body: dict[str, Any]) -> list[Wanted]:
    return _wanted(body, _COMPLETION_FEATURES, COMPLETION_KNOWN)


def _wanted(
    body: dict[str, Any],
    table: dict[str, tuple[str, str, Callable[[Any], bool]]],
    known: set[str],
) -> list[Wanted]:
    wanted = []
    for name, (feature, what, asks_nothing) in table.items():
        if name in body and not asks_nothing(body[name]):
            wanted.append(Wanted(feature, name, what))
    for name in _GRAMMAR_FIELDS:
        if body.get(name) is not None:
            wanted.append(Wanted("grammar", name, "constrained decoding"))
    unknown = [name for name in body if name not in known]
    if unknown:
        log.debug(
            "ignoring unknown request fields",
            fields=[name[:64] for name in unknown[:32]],
            count=len(unknown),
        )
    return wanted


# Chat content parts other than text, and the feature each needs.
PART_FEATURES = {
    "image_url": ("image_input", "image input"),
    "input_audio": ("audio_input", "audio input"),
    "file": ("file_input", "file input"),
}


def refuse_unsupported(wanted: Iterable[Wanted], caps: Capabilities, model: str) -> None:
    for w in wanted:
        if w.feature not in caps.features:
            raise unsupported(w, model)


def unsupported(w: Wanted, model: str) -> APIError:
    return invalid(
        f"'{w.param}' asks for {w.what}, which model '{model}' does not support. This "
        "gateway refuses what it cannot honour rather than answer without it; remove "
        f"'{w.param}' (or send its default) to generate plain text.",
        w.param,
        "unsupported_parameter",
    )
