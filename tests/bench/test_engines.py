"""bench/engines.py's comparison of the two engines' outputs and speeds."""

from __future__ import annotations

import pytest

from bench.concurrency_check import CHECK_PROMPTS
from bench.engines import decode_rate, summarise
from bench.load import RequestRecord


def record(text: str, stamps: list[float], tokens: int) -> RequestRecord:
    return RequestRecord(start=0.0, stamps=stamps, tokens=tokens, text=text, done=True)


def test_agreement_and_decode_rates_are_counted_per_prompt() -> None:
    n = len(CHECK_PROMPTS)
    same = "x" * 40
    llama = [record(same, [0.1, 0.2, 1.1], 11) for _ in range(n)]
    ct = [record(same, [0.2, 0.3, 2.2], 11) for _ in range(n - 2)]
    ct += [record("y" * 40, [0.2, 2.2], 11), record("x" * 30 + "z" * 10, [0.2, 2.2], 11)]
    summary = summarise({"llama_cpp": llama, "ctransformers": ct})
    assert summary["prompts"] == n
    assert summary["identical_outputs"] == n - 2
    assert summary["same_first_20_chars"] == n - 1
    assert summary["llama_cpp"]["decode_tokens_per_s_median"] == pytest.approx(10.0)
    assert summary["ctransformers"]["decode_tokens_per_s_median"] == pytest.approx(5.0)
    assert summary["ctransformers_over_llama_cpp_decode"] == pytest.approx(0.5)


def test_a_single_token_has_no_decode_rate() -> None:
    assert decode_rate(record("a", [0.1], 1)) is None
