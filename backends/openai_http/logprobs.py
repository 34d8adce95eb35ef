"""Log-probabilities in an upstream's chunks -> neutral `TokenLogprob`s: the legacy
completions shape (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) and the
chat shape (`content: [{token, logprob, top_logprobs: [...]}]`). Every field is
type-checked (ValueError otherwise), so a hostile upstream is a clean 502."""

from __future__ import annotations

import math
from typing import Any

from backends.base import TokenLogprob

MAX_TOP = 20  # alternatives per token: OpenAI's own bound (legacy: 5)


def legacy_logprobs(value: Any) -> tuple[TokenLogprob, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError("logprobs is not an object")
    tokens = _list(value.get("tokens"), "logprobs.tokens")
    values = _list(value.get("token_logprobs"), "logprobs.token_logprobs")
    tops_raw = value.get("top_logprobs")
    tops = [None] * len(tokens) if tops_raw is None else _list(tops_raw, "logprobs.top_logprobs")
    if not len(tokens) == len(values) == len(tops):
        raise ValueError("logprobs lists of different lengths")
    out = []
    for token, logprob, top in zip(tokens, values, tops, strict=True):
        if not isinstance(token, str):
            raise ValueError("a logprobs token is not a string")
        if top is not None and (not isinstance(top, dict) or len(top) > MAX_TOP):
            raise ValueError("a top_logprobs entry is not an object of at most 20 tokens")
        alternatives = tuple(
            (_text(t), _number(lp, "top_logprobs")) for t, lp in (top or {}).items()
        )
        number = None if logprob is None else _number(logprob, "token_logprobs")
        out.append(TokenLogprob(token, number, alternatives))
    return tuple(out)


def chat_logprobs(value: Any) -> tuple[TokenLogprob, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError("logprobs is not an object")
    content = value.get("content")
    if content is None:
        return ()
    out = []
    for entry in _list(content, "logprobs.content"):
        if not isinstance(entry, dict):
            raise ValueError("a logprobs entry is not an object")
        top = _list(entry.get("top_logprobs") or [], "top_logprobs")
        if len(top) > MAX_TOP:
            raise ValueError("more than 20 top_logprobs")
        alternatives = []
        for alt in top:
            if not isinstance(alt, dict):
                raise ValueError("a top_logprobs entry is not an object")
            alternatives.append((_text(alt.get("token")), _number(alt.get("logprob"), "logprob")))
        out.append(
            TokenLogprob(
                _text(entry.get("token")),
                _number(entry.get("logprob"), "logprob"),
                tuple(alternatives),
            )
        )
    return tuple(out)


def split_prompt(
    text: str, entries: tuple[TokenLogprob, ...], prompt: str
) -> tuple[str, tuple[TokenLogprob, ...], str, tuple[TokenLogprob, ...]]:
    """A whole echoed answer cut into (prompt text, its entries, generated text, its
    entries): the entries whose texts fall inside the prompt belong to it."""
    if not text.startswith(prompt):
        return "", (), text, entries
    length, cut = 0, 0
    while cut < len(entries) and length < len(prompt):
        length += len(entries[cut].token)
        cut += 1
    return prompt, entries[:cut], text[len(prompt) :], entries[cut:]


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a logprobs token is not a string")
    return value


def _number(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} is not a number")
    number = float(value)
    if math.isnan(number) or number > 0:
        raise ValueError(f"{name} is not a log-probability")
    return number
