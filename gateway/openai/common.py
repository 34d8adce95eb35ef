"""Pieces shared by the completions and chat wire formats."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace

from backends.base import Capabilities, ModelInfo, SamplingParams, Usage
from gateway.errors import invalid
from gateway.limits import LimitsSettings
from gateway.openai import params as p


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def fingerprint(info: ModelInfo) -> str:
    """Changes when the backend configuration that produced a response changes."""
    source = f"{info.backend}|{info.id}|{sorted(info.details.items())!r}"
    return "fp_" + hashlib.sha256(source.encode()).hexdigest()[:10]


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def for_candidate(sampling: SamplingParams, j: int) -> SamplingParams:
    """The j-th choice of one prompt: with a seed, each gets its own (seed + j) so that
    the choices differ, reproducibly."""
    if j and sampling.seed is not None:
        return replace(sampling, seed=sampling.seed + j)
    return sampling


def sampling_from(
    body: p.Body,
    *max_names: str,
    default_max_tokens: int | None,
    limits: LimitsSettings | None = None,
) -> SamplingParams:
    """The sampling parameters both endpoints share. The first of `max_names` present
    in the body gives the token limit; an explicit null means "up to the context".
    Integers are bounded where a native sampler stores them (top_k is an int32, seeds
    are int64 as OpenAI documents them), so nothing wraps around."""
    max_tokens: int | None = default_max_tokens
    # Every alias present is validated, the first one present gives the limit.
    given = [name for name in max_names if name in body]
    for name in reversed(given):
        max_tokens = p.get_int(body, name, None, low=0, high=p.INT32_MAX)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=p.get_float(body, "temperature", 1.0, 0.0, 2.0),
        top_p=p.get_float(body, "top_p", 1.0, 0.0, 1.0),
        top_k=p.get_int(body, "top_k", 0, low=0, high=p.INT32_MAX) or 0,
        min_p=p.get_float(body, "min_p", 0.0, 0.0, 1.0),
        presence_penalty=p.get_float(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=p.get_float(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repeat_penalty=p.get_float(body, "repeat_penalty", 1.0, 0.0, 10.0),
        logit_bias=p.get_logit_bias(body),
        seed=p.get_int(body, "seed", None, low=p.INT64[0], high=p.INT64[1]),
        stop=p.get_stop(body, limits=limits),
    )


def check_vocabulary(sampling: SamplingParams, caps: Capabilities, model: str) -> None:
    """logit_bias keys must be token ids of this model, when the backend knows its
    vocabulary (a key past it would be dropped, or wrap around, in a native sampler)."""
    if caps.n_vocab is None or not sampling.logit_bias:
        return
    bad = max(sampling.logit_bias)
    if bad >= caps.n_vocab:
        raise invalid(
            f"Invalid key in 'logit_bias': token id {bad} is outside the vocabulary of "
            f"model '{model}' (0..{caps.n_vocab - 1}).",
            "logit_bias",
        )
