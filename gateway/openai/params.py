"""Typed readers for fields of an OpenAI request body. Each raises a 400 that names
the parameter, in OpenAI's wording where it has one.

`parse_json_body` is the one door a body comes through: besides malformed JSON it
refuses what would crash or stall anything behind it (integer literals over Python's
4,300 digits, nesting deeper than `MAX_JSON_DEPTH`, lone UTF-16 surrogates in any
string or key), so every reader below sees a tree of bounded depth whose strings can
be encoded, logged and tokenised."""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import APIError, invalid
from gateway.limits import MAX_JSON_DEPTH, MAX_LOGIT_BIAS, LimitsSettings

Body = Mapping[str, Any]
MISSING = object()
INT32_MAX = 2**31 - 1
INT64 = (-(2**63), 2**63 - 1)
# Escapes of a UTF-16 surrogate: the only way a lone one gets into a decoded body.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# A token id as a JSON object key: plain ASCII digits, no sign, spaces or leading zeros.
_TOKEN_KEY = re.compile(r"(?:0|[1-9][0-9]{0,9})", re.ASCII)


# JSON values the C parser may build on the event loop (a few milliseconds): it holds
# the GIL for the whole parse, so a body with more (100,000 empty chat messages fit in
# 3 MB) is read by the pure-Python scanner in a worker thread, which lets the event loop
# run between values.
MAX_VALUES_ON_LOOP = 20_000


def parse_off_loop(raw: bytes) -> bool:
    """Whether reading `raw` belongs in a worker thread. Counts separators and
    containers (an upper bound of the values it holds) in C, in about a millisecond."""
    return raw.count(b",") + raw.count(b"{") + raw.count(b"[") > MAX_VALUES_ON_LOOP


class _InterleavedDecoder(json.JSONDecoder):
    """json's own pure-Python scanner: slower than the C one, but it gives up the GIL
    between values, so the thread that runs it cannot stall the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.parse_string = json.decoder.py_scanstring  # type: ignore[attr-defined]
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]


def parse_json_body(raw: bytes, interleaved: bool = False) -> dict[str, Any]:
    """`interleaved`: parse with the pure-Python scanner (in a worker thread)."""
    try:
        body = _InterleavedDecoder().decode(raw.decode()) if interleaved else json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise _not_json(reason) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # an integer literal over sys.get_int_max_str_digits() digits
        raise _not_json("an integer literal has more than 4300 digits") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    # A lone surrogate can only come from a \uD8xx-style escape: without one, only the
    # depth needs a look (the surrogate check serialises the whole tree in one C call).
    escapes = _SURROGATE_ESCAPE.search(raw) is not None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH or escapes:
        check_tree(body, surrogates=escapes)
    return body


def _not_json(reason: str) -> APIError:
    return invalid(
        "We could not parse the JSON body of your request. (HINT: This likely means "
        "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
        f"payload, but what was sent was not valid JSON: {reason})"
    )


def _too_deep() -> APIError:
    return invalid(
        f"The JSON body of your request nests deeper than {MAX_JSON_DEPTH} levels of "
        "arrays and objects."
    )


def check_tree(body: Any, surrogates: bool = True) -> None:
    """Refuse nesting past MAX_JSON_DEPTH and lone surrogates, naming where they are.
    Level by level and in C where it can be (a hostile 4 MiB body is checked in tens of
    milliseconds), so that no depth can exhaust the stack."""
    level: list[Any] = [body]
    for _ in range(MAX_JSON_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            break
    else:
        raise _too_deep()
    if surrogates and _has_surrogate(body):
        _find_surrogate(body, ())


def _has_surrogate(value: Any) -> bool:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_surrogate(node: Any, path: tuple[str | int, ...]) -> None:
    """Follow the one branch that holds a lone surrogate down to its string (halving
    lists, so that a list of a million items costs a few dozen encodings)."""
    while not isinstance(node, str):
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key, path)
                if _has_surrogate(value):
                    node, path = value, (*path, key)
                    break
            else:
                return
        else:
            lo, hi = 0, len(node)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if _has_surrogate(node[lo:mid]) else (mid, hi)
            if hi == lo:
                return
            node, path = node[lo], (*path, lo)
    _check_text(node, path)


def _check_text(text: str, path: tuple[str | int, ...]) -> None:
    found = _SURROGATE.search(text)
    if found is None:
        return
    where = _path_name(path)
    raise invalid(
        f"Invalid string in '{where or 'body'}': it contains a lone UTF-16 surrogate "
        f"(\\u{ord(found.group()):04x}), which is not a Unicode character.",
        where or None,
    )


def _path_name(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = part if len(part) <= 64 and not _SURROGATE.search(part) else "?"
            out += f".{shown}" if out else shown
    return out


def show(value: Any, width: int = 80) -> str:
    """A short, safe rendering of a client's value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**24:
        digits = len(str(abs(value)))
        return f"{'-' if value < 0 else ''}<an integer of {digits} digits>"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return type(value).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def _type_error(name: str, value: Any, expected: str) -> APIError:
    return invalid(f"Invalid type for '{name}': expected {expected}, but got {show(value)}.", name)


def _range_error(name: str, value: Any, low: Any, high: Any) -> APIError:
    if high is None:
        return invalid(f"{show(value)} is less than the minimum of {low} - '{name}'", name)
    return invalid(
        f"Invalid value for '{name}': {show(value)} is not between {low} and {high}.", name
    )


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
    if not (is_int(value) or isinstance(value, float)):
        raise _type_error(name, value, "a number")
    try:
        number = float(value)  # an integer of hundreds of digits overflows here
    except OverflowError:
        raise _range_error(name, value, low, high) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _type_error(name, value, "a number")
    if (low is not None and number < low) or (high is not None and number > high):
        raise _range_error(name, value, low, high)
    return number


def get_stop(
    body: Body, name: str = "stop", limits: LimitsSettings | None = None
) -> tuple[str, ...]:
    """A string or a list of up to `limits.max_stop` strings (OpenAI allows 4; editors'
    completion plugins send more), each of at most `limits.max_stop_chars`."""
    limits = limits or LimitsSettings()
    value = body.get(name)
    if value is None:
        return ()
    expected = f"a string or an array of up to {limits.max_stop} strings"
    if isinstance(value, str):
        stops = [value]
    elif isinstance(value, list):
        if len(value) > limits.max_stop:
            raise invalid(
                f"Invalid '{name}': at most {limits.max_stop} stop sequences are allowed "
                f"(limits.max_stop), but {len(value)} were given.",
                name,
                "limit_exceeded",
            )
        if not all(isinstance(s, str) for s in value):
            raise _type_error(name, value, expected)
        stops = value
    else:
        raise _type_error(name, value, expected)
    for s in stops:
        if len(s) > limits.max_stop_chars:
            raise invalid(
                f"Invalid '{name}': a stop sequence has {len(s)} characters; the limit is "
                f"{limits.max_stop_chars} (limits.max_stop_chars).",
                name,
                "limit_exceeded",
            )
    return tuple(s for s in stops if s)


def get_logit_bias(body: Body, name: str = "logit_bias") -> dict[int, float]:
    """Token id (a canonical decimal string: "42", never " 42", "+42", "4_2" or other
    scripts' digits) -> bias from -100 to 100. The range of ids is checked against the
    model's vocabulary later, by the call's capability check."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(name, value, "an object mapping token ids to numbers")
    if len(value) > MAX_LOGIT_BIAS:
        raise invalid(
            f"Invalid '{name}': at most {MAX_LOGIT_BIAS} token ids may be biased, but "
            f"{len(value)} were given.",
            name,
        )
    bias: dict[int, float] = {}
    for key, amount in value.items():
        if not _TOKEN_KEY.fullmatch(key) or int(key) > INT32_MAX:
            raise invalid(
                f"Invalid key in '{name}': {show(key, 40)} is not a token id (a non-negative "
                f"integer up to {INT32_MAX} written in decimal digits).",
                name,
            )
        token = int(key)
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


def limit_exceeded(param: str, what: str, size: int, limit: int, setting: str) -> APIError:
    """A request over one of the `[limits]` settings."""
    return invalid(
        f"Invalid '{param}': {what} {size}, over this gateway's limit of {limit} "
        f"(limits.{setting}).",
        param,
        "limit_exceeded",
    )
