"""`/v1/completions`: OpenAI JSON in, neutral requests out; neutral results in, OpenAI
JSON and SSE chunks out. Nothing else in the gateway knows this wire format."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from backends.base import Capabilities, GenerationRequest, ModelInfo, SamplingParams, Usage
from gateway.errors import invalid
from gateway.openai import params as p


@dataclass(frozen=True, slots=True)
class CompletionCall:
    model: str
    prompts: tuple[str | tuple[int, ...], ...]
    sampling: SamplingParams
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    user: str | None

    def requests(self, request_id: str) -> list[GenerationRequest]:
        """One generation per choice: prompt i, sample j -> choice index i * n + j."""
        return [
            GenerationRequest(prompt, self.sampling, f"{request_id}/{i * self.n + j}")
            for i, prompt in enumerate(self.prompts)
            for j in range(self.n)
        ]

    def prompt_of(self, choice_index: int) -> str | tuple[int, ...]:
        return self.prompts[choice_index // self.n]


def parse_prompt(value: Any) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            return tuple(value)
        if all(p.is_int(x) for x in value):
            return (tuple(value),)
        if all(isinstance(x, list) and x and all(p.is_int(t) for t in x) for x in value):
            return tuple(tuple(x) for x in value)
    raise invalid(
        "Invalid 'prompt': expected a string, an array of strings, an array of token ids, "
        "or an array of arrays of token ids (none of them empty).",
        "prompt",
    )


def parse_completion_request(body: p.Body) -> CompletionCall:
    model = p.get_str(body, "model", required=True)
    assert model is not None
    if "prompt" not in body or body["prompt"] is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt")
    prompts = parse_prompt(body["prompt"])
    max_tokens = p.get_int(body, "max_tokens", 16, low=0) if "max_tokens" in body else 16
    if "max_tokens" in body and body["max_tokens"] is None:
        max_tokens = None  # up to the context window
    stream = p.get_bool(body, "stream")
    n = p.get_int(body, "n", 1, low=1, high=128)
    assert n is not None
    best_of = p.get_int(body, "best_of", None, low=1, high=20)
    if best_of is not None and best_of < n:
        raise invalid("best_of must be greater than or equal to n.", "best_of")
    if best_of is not None and best_of > n:
        raise invalid(
            "best_of > n is not supported yet: it needs token log-probabilities.", "best_of"
        )
    logprobs = p.get_int(body, "logprobs", None, low=0, high=5)
    if logprobs is not None:
        raise invalid("logprobs is not supported yet by this gateway.", "logprobs")
    suffix = p.get_str(body, "suffix")
    if suffix:
        raise invalid("suffix (fill-in-the-middle) is not supported by this model.", "suffix")
    sampling = SamplingParams(
        max_tokens=max_tokens,
        temperature=p.get_float(body, "temperature", 1.0, 0.0, 2.0),
        top_p=p.get_float(body, "top_p", 1.0, 0.0, 1.0),
        top_k=p.get_int(body, "top_k", 0, low=0) or 0,
        min_p=p.get_float(body, "min_p", 0.0, 0.0, 1.0),
        presence_penalty=p.get_float(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=p.get_float(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repeat_penalty=p.get_float(body, "repeat_penalty", 1.0, 0.0, 10.0),
        logit_bias=p.get_logit_bias(body),
        seed=p.get_int(body, "seed", None),
        stop=p.get_stop(body),
    )
    return CompletionCall(
        model=model,
        prompts=prompts,
        sampling=sampling,
        n=n,
        stream=stream,
        include_usage=p.get_stream_options(body, stream),
        echo=p.get_bool(body, "echo"),
        user=p.get_str(body, "user"),
    )


def check_capabilities(call: CompletionCall, caps: Capabilities, model: str) -> None:
    if call.stream and not caps.streaming:
        raise invalid(f"Model '{model}' does not support streaming.", "stream")
    if any(not isinstance(x, str) for x in call.prompts):
        if not caps.token_prompts:
            raise invalid(f"Model '{model}' does not accept prompts as token ids.", "prompt")
        if call.echo and not caps.echo:
            raise invalid(f"Model '{model}' cannot echo prompts given as token ids.", "echo")


def fingerprint(info: ModelInfo) -> str:
    """Changes when the backend configuration that produced a response changes."""
    source = f"{info.backend}|{info.id}|{sorted(info.details.items())!r}"
    return "fp_" + hashlib.sha256(source.encode()).hexdigest()[:10]


def new_completion_id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class ChoiceResult:
    index: int
    text: str
    finish_reason: str


class CompletionEncoder:
    """Builds response bodies and stream chunks that share one id and timestamp."""

    def __init__(self, model: str, fingerprint: str, include_usage: bool = False) -> None:
        self.id = new_completion_id()
        self.created = int(time.time())
        self.model = model
        self.fingerprint = fingerprint
        self.include_usage = include_usage

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }

    def response(self, choices: list[ChoiceResult], usage: Usage) -> dict[str, Any]:
        body = self._envelope(
            [
                {
                    "text": c.text,
                    "index": c.index,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in sorted(choices, key=lambda c: c.index)
            ]
        )
        body["usage"] = usage_json(usage)
        return body

    def chunk(self, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        body = self._envelope(
            [{"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}]
        )
        if self.include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        body = self._envelope([])
        body["usage"] = usage_json(usage)
        return body


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
