"""Reading an upstream's log-probs: both shapes, and hostile values refused."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import TokenLogprob
from backends.openai_http.logprobs import chat_logprobs, legacy_logprobs, split_prompt


def test_the_legacy_shape() -> None:
    value = {
        "tokens": ["a", "b"],
        "token_logprobs": [None, -0.5],
        "top_logprobs": [None, {"b": -0.5, "c": -2}],
        "text_offset": [0, 1],
    }
    assert legacy_logprobs(value) == (
        TokenLogprob("a", None, ()),
        TokenLogprob("b", -0.5, (("b", -0.5), ("c", -2.0))),
    )
    assert legacy_logprobs(None) == ()


def test_the_chat_shape() -> None:
    value = {
        "content": [
            {
                "token": "hi",
                "logprob": -0.1,
                "bytes": [104, 105],
                "top_logprobs": [{"token": "hi", "logprob": -0.1}],
            }
        ],
        "refusal": None,
    }
    assert chat_logprobs(value) == (TokenLogprob("hi", -0.1, (("hi", -0.1),)),)
    assert chat_logprobs({"content": None}) == ()


@pytest.mark.parametrize(
    "value",
    [
        [],
        {"tokens": ["a"], "token_logprobs": []},
        {"tokens": [1], "token_logprobs": [-1.0]},
        {"tokens": ["a"], "token_logprobs": ["x"]},
        {"tokens": ["a"], "token_logprobs": [0.5]},
        {"tokens": ["a"], "token_logprobs": [True]},
        {"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [[1]]},
        {
            "tokens": ["a"],
            "token_logprobs": [-1.0],
            "top_logprobs": [{str(i): -1 for i in range(21)}],
        },
    ],
)
def test_hostile_legacy_values_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        legacy_logprobs(value)


@pytest.mark.parametrize(
    "value",
    [
        {"content": {}},
        {"content": [1]},
        {"content": [{"token": "a", "logprob": "x"}]},
        {"content": [{"token": None, "logprob": -1}]},
        {"content": [{"token": "a", "logprob": -1, "top_logprobs": [{"token": "a"}]}]},
    ],
)
def test_hostile_chat_values_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        chat_logprobs(value)


def test_a_whole_echoed_answer_is_cut_at_the_prompt() -> None:
    entries = (TokenLogprob("he", None), TokenLogprob("llo", -1), TokenLogprob(" x", -2))
    assert split_prompt("hello x", entries, "hello") == ("hello", entries[:2], " x", entries[2:])
    assert split_prompt("other", entries, "hello") == ("", (), "other", entries)
