"""Unit tests of the typed field readers: every refusal is a 400 naming the field, and
nothing a client can write makes a reader raise anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import APIError
from gateway.limits import MAX_JSON_DEPTH, MAX_LOGIT_BIAS, LimitsSettings
from gateway.openai import params as p
from gateway.openai.common import sampling_from


def refused(call: Any, *args: Any, **kw: Any) -> APIError:
    with pytest.raises(APIError) as info:
        call(*args, **kw)
    assert info.value.status == 400
    return info.value


# -- parse_json_body ------------------------------------------------------------------


def test_parse_json_body_reads_an_object() -> None:
    assert p.parse_json_body(b'{"a": [1, {"b": "c"}]}') == {"a": [1, {"b": "c"}]}


def test_integer_literal_over_python_digit_limit_is_400() -> None:
    raw = b'{"prompt": "x", "extra": ' + b"9" * 5000 + b"}"
    error = refused(p.parse_json_body, raw)
    assert "4300 digits" in error.message


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 990, 5000, 100_000])
def test_deep_nesting_is_400(depth: int) -> None:
    raw = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
    error = refused(p.parse_json_body, raw)
    assert "nests deeper" in error.message or "not valid JSON" in error.message


def test_nesting_up_to_the_limit_is_read() -> None:
    depth = MAX_JSON_DEPTH - 1  # the object itself is one level
    raw = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
    assert p.parse_json_body(raw)["x"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a\ud800"}, "prompt"),
        ({"prompt": ["ok", "b\udfff"]}, "prompt[1]"),
        ({"messages": [{"role": "user", "content": "\udc00"}]}, "messages[0].content"),
        ({"model": "m\ud800"}, "model"),
        ({"stop": ["\ud800"]}, "stop[0]"),
        ({"logit_bias": {"\ud800": 1}}, "logit_bias"),
        ({"\ud800": 1}, None),
    ],
)
def test_lone_surrogate_anywhere_is_400_naming_where(body: Any, param: str | None) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \\udXXX
    error = refused(p.parse_json_body, raw)
    assert error.param == param
    assert "surrogate" in error.message
    error.message.encode()  # the message itself is valid Unicode


def test_surrogate_pairs_are_characters_not_errors() -> None:
    assert p.parse_json_body(b'{"prompt": "\\ud83d\\ude00"}') == {"prompt": "\U0001f600"}


# -- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**4000])
def test_huge_integers_in_float_fields_are_range_errors(value: int) -> None:
    error = refused(p.get_float, {"temperature": value}, "temperature", 1.0, 0.0, 2.0)
    assert error.param == "temperature"
    assert len(error.message) < 200  # the number is not echoed digit by digit


def test_float_reader_accepts_integers_and_refuses_non_numbers() -> None:
    assert p.get_float({"t": 1}, "t", 0.5, 0.0, 2.0) == 1.0
    assert p.get_float({}, "t", 0.5) == 0.5
    for bad in ("1", True, [1], float("nan"), float("inf")):
        assert refused(p.get_float, {"t": bad}, "t", 0.5).param == "t"


def test_int_reader_bounds_and_types() -> None:
    assert p.get_int({"n": 3.0}, "n", 1, 1, 5) == 3
    assert p.get_int({"n": None}, "n", 1) == 1
    for bad in (0, 6, 1.5, "3", True, 10**400):
        assert refused(p.get_int, {"n": bad}, "n", 1, 1, 5).param == "n"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", 2**32),
        ("top_k", 2**31),
        ("top_k", -1),
        ("seed", 2**63),
        ("seed", -(2**63) - 1),
        ("max_tokens", 2**31),
        ("temperature", 10**400),
        ("top_p", 10**400),
        ("min_p", -(10**400)),
        ("presence_penalty", 10**400),
        ("frequency_penalty", 10**400),
        ("repeat_penalty", 10**400),
    ],
)
def test_sampling_integers_never_wrap(field: str, value: int) -> None:
    error = refused(sampling_from, {field: value}, "max_tokens", default_max_tokens=16)
    assert error.param == field


def test_sampling_extremes_that_fit_are_kept() -> None:
    s = sampling_from({"top_k": 2**31 - 1, "seed": -(2**63)}, "max_tokens", default_max_tokens=16)
    assert (s.top_k, s.seed) == (2**31 - 1, -(2**63))


def test_every_max_tokens_alias_is_validated_and_the_first_wins() -> None:
    names = ("max_completion_tokens", "max_tokens")
    both = {"max_completion_tokens": 5, "max_tokens": 7}
    assert sampling_from(both, *names, default_max_tokens=None).max_tokens == 5
    error = refused(
        sampling_from,
        {"max_completion_tokens": 5, "max_tokens": -1},
        *names,
        default_max_tokens=None,
    )
    assert error.param == "max_tokens"


# -- stop -------------------------------------------------------------------------------


def test_stop_takes_up_to_sixteen_strings_by_default() -> None:
    stops = [f"s{i}" for i in range(16)]
    assert p.get_stop({"stop": stops}) == tuple(stops)
    assert p.get_stop({"stop": "x"}) == ("x",)
    assert p.get_stop({"stop": ["", "a"]}) == ("a",)
    error = refused(p.get_stop, {"stop": [*stops, "one more"]})
    assert error.param == "stop" and "16" in error.message and "limits.max_stop" in error.message


def test_stop_strings_are_bounded_in_length() -> None:
    limits = LimitsSettings(max_stop_chars=8)
    assert p.get_stop({"stop": ["x" * 8]}, limits=limits) == ("x" * 8,)
    for value in ("x" * 9, ["ok", "x" * 9]):
        error = refused(p.get_stop, {"stop": value}, limits=limits)
        assert error.code == "limit_exceeded" and "max_stop_chars" in error.message


def test_stop_count_follows_the_setting() -> None:
    limits = LimitsSettings(max_stop=2)
    assert refused(p.get_stop, {"stop": ["a", "b", "c"]}, limits=limits).param == "stop"


@pytest.mark.parametrize("value", [7, [1], ["a", None], {"a": 1}])
def test_stop_types(value: Any) -> None:
    assert refused(p.get_stop, {"stop": value}).param == "stop"


# -- logit_bias -------------------------------------------------------------------------


def test_logit_bias_reads_canonical_token_ids() -> None:
    assert p.get_logit_bias({"logit_bias": {"0": -100, "42": 5.5, "2147483647": 1}}) == {
        0: -100.0,
        42: 5.5,
        2**31 - 1: 1.0,
    }


@pytest.mark.parametrize(
    "key",
    [
        " 5 ",
        "5 ",
        "1_0",
        "\u0663",
        "+5",
        "-1",
        "05",
        "",
        "0x10",
        "1e3",
        "5.0",
        "4294967296",
        "2147483648",
        "99999999999999999999",
        "\uff15",
    ],
)
def test_logit_bias_refuses_keys_that_are_not_canonical_ids(key: str) -> None:
    error = refused(p.get_logit_bias, {"logit_bias": {key: 1}})
    assert error.param == "logit_bias"


@pytest.mark.parametrize("amount", [101, -101, "1", None, True, [1], 10**400])
def test_logit_bias_values_from_minus_to_plus_100(amount: Any) -> None:
    assert refused(p.get_logit_bias, {"logit_bias": {"1": amount}}).param == "logit_bias"


def test_logit_bias_has_a_bounded_number_of_keys() -> None:
    ok = {str(i): 1 for i in range(MAX_LOGIT_BIAS)}
    assert len(p.get_logit_bias({"logit_bias": ok})) == MAX_LOGIT_BIAS
    too_many = {str(i): 1 for i in range(MAX_LOGIT_BIAS + 1)}
    assert refused(p.get_logit_bias, {"logit_bias": too_many}).param == "logit_bias"


# -- strings, booleans, stream options --------------------------------------------------


def test_str_and_bool_readers() -> None:
    assert p.get_str({"a": "x"}, "a") == "x"
    assert p.get_str({}, "a", default="d") == "d"
    assert refused(p.get_str, {}, "a", required=True).param == "a"
    assert refused(p.get_str, {"a": 1}, "a").param == "a"
    assert p.get_bool({"b": True}, "b") is True
    assert refused(p.get_bool, {"b": 1}, "b").param == "b"


def test_stream_options() -> None:
    assert p.get_stream_options({"stream_options": {"include_usage": True}}, True) is True
    assert p.get_stream_options({}, False) is False
    assert refused(p.get_stream_options, {"stream_options": {}}, False).param == "stream_options"
    error = refused(p.get_stream_options, {"stream_options": {"include_usage": 1}}, True)
    assert error.param == "stream_options.include_usage"


def test_show_never_echoes_huge_values() -> None:
    assert len(p.show(10**4000)) < 40
    assert len(p.show("x" * 10_000)) <= 80
    assert p.show(object()) == "object"
