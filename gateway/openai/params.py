"""Typed readers for fields of an OpenAI request body. Each raises a 400 that names
the parameter, in OpenAI's wording where it has one. Unknown fields are ignored, as
OpenAI ignores them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from gateway.errors import APIError, invalid

Body = Mapping[str, Any]
MISSING = object()


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
            f"payload, but what was sent was not valid JSON: {reason})"
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def _type_error(name: str, value: Any, expected: str) -> APIError:
    shown = json.dumps(value)[:80] if _jsonable(value) else type(value).__name__
    return invalid(f"Invalid type for '{name}': expected {expected}, but got {shown}.", name)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _range_error(name: str, value: Any, low: Any, high: Any) -> APIError:
    if high is None:
        return invalid(f"{value} is less than the minimum of {low} - '{name}'", name)
    return invalid(f"Invalid value for '{name}': {value} is not between {low} and {high}.", name)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def get_str(
    body: Body, name: str, *, required: bool = False, default: str | None = None
) -> str | None:
    value = body.get(name, MISSING)
    if value is MISSING or value is None:
        if required:
            raise invalid(f"Missing required parameter: '{name}'.", name)
        return default
    if not isinstance(value, str):
        raise _type_error(name, value, "a string")
    return value


def get_bool(body: Body, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(name, value, "a boolean")
    return value


def get_int(
    body: Body, name: str, default: int | None, low: int | None = None, high: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_int(value):
        raise _type_error(name, value, "an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _range_error(name, value, low, high)
    return value


def get_float(
    body: Body, name: str, default: float, low: float | None = None, high: float | None = None
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not (is_int(value) or isinstance(value, float)) or not math.isfinite(value):
        raise _type_error(name, value, "a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _range_error(name, value, low, high)
    return float(value)


def get_stop(body: Body, name: str = "stop") -> tuple[str, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        if len(value) > 4:
            raise invalid(f"Invalid '{name}': at most 4 stop sequences are allowed.", name)
        if not all(isinstance(s, str) for s in value):
            raise _type_error(name, value, "a string or an array of up to 4 strings")
        return tuple(s for s in value if s)
    raise _type_error(name, value, "a string or an array of up to 4 strings")


def get_logit_bias(body: Body, name: str = "logit_bias") -> dict[int, float]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(name, value, "an object mapping token ids to numbers")
    bias: dict[int, float] = {}
    for key, amount in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise invalid(
                f"Invalid key in '{name}': {key!r} is not a token id (an integer).", name
            ) from None
        if token < 0:
            raise invalid(f"Invalid key in '{name}': token id {token} is negative.", name)
        if not (is_int(amount) or isinstance(amount, float)) or not -100 <= amount <= 100:
            raise invalid(
                f"Invalid value for '{name}' token {token}: must be a number from -100 to 100.",
                name,
            )
        bias[token] = float(amount)
    return bias


def get_stream_options(body: Body, stream: bool) -> bool:
    """Returns whether usage was asked for in the stream."""
    value = body.get("stream_options")
    if value is None:
        return False
    if not isinstance(value, dict):
        raise _type_error("stream_options", value, "an object")
    if not stream:
        raise invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    include = value.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise _type_error("stream_options.include_usage", include, "a boolean")
    return bool(include)
