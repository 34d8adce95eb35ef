"""The `[limits]` section: bounds on what one request may ask for, checked while its
JSON is read, before any tokenising or template rendering. Each refusal is a 400
that names the field and the setting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

# Nesting deeper than this is refused before anything walks the body (OpenAI's own
# request bodies nest four or five levels).
MAX_JSON_DEPTH = 64
# Token ids in `logit_bias`: OpenAI documents no count; llama.cpp copies the map per
# sequence and every sampling step walks it.
MAX_LOGIT_BIAS = 1024


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    max_prompt_chars: int = 1_000_000  # all prompt strings of a completion, suffix included
    max_prompts: int = 256  # strings (or token-id lists) in one `prompt` array
    max_messages: int = 1_000  # chat messages in one request
    max_chat_chars: int = 1_000_000  # all chat message contents (and names) together
    max_stop: int = 16  # stop sequences (OpenAI allows 4; editors send up to 9)
    max_stop_chars: int = 256  # characters of each stop sequence


# (lowest allowed, highest allowed) for each setting.
BOUNDS: dict[str, tuple[int, int]] = {
    "max_prompt_chars": (1, 2**31 - 1),
    "max_prompts": (1, 1_000_000),
    "max_messages": (1, 1_000_000),
    "max_chat_chars": (1, 2**31 - 1),
    "max_stop": (0, 1_000),
    "max_stop_chars": (1, 1_000_000),
}


def parse_limits(raw: Any, fail: Callable[[str, str], Exception]) -> LimitsSettings:
    """Read the `[limits]` table; `fail(key, problem)` builds the configuration error."""
    if not isinstance(raw, dict):
        raise fail("limits", "must be a table")
    known = [f.name for f in fields(LimitsSettings)]
    extra = sorted(set(raw) - set(known))
    if extra:
        raise fail(f"limits.{extra[0]}", f"unknown key (known: {', '.join(known)})")
    values: dict[str, int] = {}
    for key, value in raw.items():
        low, high = BOUNDS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise fail(f"limits.{key}", f"must be an integer from {low} to {high}")
        values[key] = value
    return LimitsSettings(**values)
