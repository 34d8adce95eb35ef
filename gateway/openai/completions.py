"""`/v1/completions`: OpenAI JSON in, neutral requests out; neutral results in, OpenAI
JSON and SSE chunks out (the legacy `text_completion` shapes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from backends.base import (
    Capabilities,
    Finished,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    Usage,
)
from gateway.errors import invalid
from gateway.generation import ChoiceOutcome
from gateway.limits import LimitsSettings
from gateway.openai import params as p
from gateway.openai import structured
from gateway.openai.common import (
    check_vocabulary,
    for_candidate,
    new_id,
    sampling_from,
    usage_json,
)
from gateway.openai.fields import Wanted, completion_features, refuse_unsupported


@dataclass(frozen=True, slots=True)
class CompletionCall:
    model: str
    prompts: tuple[str | tuple[int, ...], ...]
    sampling: SamplingParams
    n: int
    best_of: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None
    suffix: str | None
    user: str | None
    wanted: tuple[Wanted, ...] = ()
    constraint: OutputConstraint | None = None  # response_format (an extension here)

    @property
    def per_prompt(self) -> int:
        """Generations per prompt: `best_of` candidates, of which `n` are returned."""
        return self.best_of

    def check(self, caps: Capabilities) -> None:
        model = self.model
        refuse_unsupported(self.wanted, caps, model)
        check_vocabulary(self.sampling, caps, model)
        if caps.n_vocab is not None:
            for prompt in self.prompts:
                bad = max(prompt, default=0) if not isinstance(prompt, str) else 0
                if bad >= caps.n_vocab:
                    raise invalid(
                        f"Invalid 'prompt': token id {bad} is outside the vocabulary of "
                        f"model '{model}' (0..{caps.n_vocab - 1}).",
                        "prompt",
                    )
        if self.stream and not caps.streaming:
            raise invalid(f"Model '{model}' does not support streaming.", "stream")
        if any(not isinstance(x, str) for x in self.prompts) and not caps.token_prompts:
            raise invalid(f"Model '{model}' does not accept prompts as token ids.", "prompt")
        if self.echo and not caps.echo:
            raise invalid(f"Model '{model}' does not support 'echo'.", "echo")
        if (self.logprobs is not None or self.best_of > self.n) and not caps.logprobs:
            param = "logprobs" if self.logprobs is not None else "best_of"
            raise invalid(f"Model '{model}' does not report token log-probabilities.", param)
        if self.suffix is not None and not caps.suffix:
            raise invalid(
                f"Model '{model}' does not support 'suffix' (fill-in-the-middle): it declares "
                "no FIM prefix/suffix/middle tokens.",
                "suffix",
            )

    def requests(self, request_id: str) -> list[GenerationRequest]:
        """Prompt i, candidate j -> generation i * best_of + j. With a seed, each
        candidate gets its own (seed + j) so that they differ, reproducibly."""
        wants_logprobs = (
            self.logprobs if self.logprobs is not None else (0 if self.best_of > self.n else None)
        )
        out = []
        for i, prompt in enumerate(self.prompts):
            for j in range(self.best_of):
                out.append(
                    GenerationRequest(
                        prompt=prompt,
                        params=for_candidate(self.sampling, j),
                        request_id=f"{request_id}/{i * self.best_of + j}",
                        logprobs=wants_logprobs,
                        echo=self.echo,
                        suffix=self.suffix,
                        constraint=self.constraint,
                    )
                )
        return out

    def select(self, outcomes: list[ChoiceOutcome]) -> list[ChoiceOutcome]:
        """Keep, per prompt, the `n` candidates with the highest mean token log-probability,
        renumbered as OpenAI numbers choices (prompt i, choice k -> i * n + k)."""
        if self.best_of == self.n:
            return outcomes
        chosen = []
        for i in range(len(self.prompts)):
            group = outcomes[i * self.best_of : (i + 1) * self.best_of]
            best = sorted(group, key=lambda o: o.mean_logprob, reverse=True)[: self.n]
            for k, outcome in enumerate(best):
                outcome.index = i * self.n + k
                chosen.append(outcome)
        return chosen


def _is_token(x: Any) -> bool:
    return p.is_int(x) and 0 <= x <= p.INT32_MAX


def parse_prompt(
    value: Any, limits: LimitsSettings | None = None
) -> tuple[str | tuple[int, ...], ...]:
    """The prompts of a request, within `limits` (counted before anything is tokenised:
    how many prompts, and their characters all together)."""
    limits = limits or LimitsSettings()
    if isinstance(value, list) and len(value) > limits.max_prompts and not _is_token(value[0]):
        raise p.limit_exceeded(
            "prompt", "the number of prompts is", len(value), limits.max_prompts, "max_prompts"
        )
    prompts: tuple[str | tuple[int, ...], ...] | None = None
    if isinstance(value, str):
        prompts = (value,)
    elif isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            prompts = tuple(value)
        elif all(_is_token(x) for x in value):
            prompts = (tuple(value),)
        elif all(isinstance(x, list) and x and all(_is_token(t) for t in x) for x in value):
            prompts = tuple(tuple(x) for x in value)
    if prompts is None:
        raise invalid(
            "Invalid 'prompt': expected a string, an array of strings, an array of token "
            f"ids (0..{p.INT32_MAX}), or an array of arrays of token ids (none of them "
            "empty).",
            "prompt",
        )
    return prompts


def _check_prompt_chars(
    prompts: tuple[str | tuple[int, ...], ...], suffix: str | None, limits: LimitsSettings
) -> None:
    chars = sum(len(x) for x in prompts if isinstance(x, str)) + len(suffix or "")
    if chars > limits.max_prompt_chars:
        raise p.limit_exceeded(
            "prompt",
            "the prompt text (all prompts and the suffix) has this many characters:",
            chars,
            limits.max_prompt_chars,
            "max_prompt_chars",
        )


def parse_completion_request(body: p.Body, limits: LimitsSettings | None = None) -> CompletionCall:
    limits = limits or LimitsSettings()
    model = p.get_str(body, "model", required=True)
    assert model is not None
    if body.get("prompt") is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt")
    prompts = parse_prompt(body["prompt"], limits)
    stream = p.get_bool(body, "stream")
    n = p.get_int(body, "n", 1, low=1, high=128)
    assert n is not None
    best_of = p.get_int(body, "best_of", None, low=1, high=20)
    if best_of is not None and best_of < n:
        raise invalid("best_of must be greater than or equal to n.", "best_of")
    if best_of is not None and best_of > n and stream:
        raise invalid("Cannot stream results with best_of greater than n.", "best_of")
    suffix = p.get_str(body, "suffix")
    _check_prompt_chars(prompts, suffix, limits)
    return CompletionCall(
        model=model,
        prompts=prompts,
        sampling=sampling_from(body, "max_tokens", default_max_tokens=16, limits=limits),
        n=n,
        best_of=best_of or n,
        stream=stream,
        include_usage=p.get_stream_options(body, stream),
        echo=p.get_bool(body, "echo"),
        logprobs=p.get_int(body, "logprobs", None, low=0, high=5),
        suffix=suffix if suffix else None,
        user=p.get_str(body, "user"),
        wanted=tuple(completion_features(dict(body))),
        constraint=structured.response_format(dict(body)),
    )


class LegacyLogprobs:
    """The legacy `logprobs` object, built token by token with offsets into the text
    returned so far (the echoed prompt included)."""

    def __init__(self) -> None:
        self.offset = 0

    def block(self, entries: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
        tokens, values, tops, offsets = [], [], [], []
        for entry in entries:
            tokens.append(entry.token)
            values.append(entry.logprob)
            tops.append(dict(entry.top) if entry.logprob is not None else None)
            offsets.append(self.offset)
            self.offset += len(entry.token)
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops,
            "text_offset": offsets,
        }


class CompletionEncoder:
    """Builds the response body, or the stream's chunks, of one completions call."""

    object_name = "text_completion"

    def __init__(self, call: CompletionCall, fingerprint: str) -> None:
        self.call = call
        self.id = new_id("cmpl")
        self.created = int(time.time())
        self.fingerprint = fingerprint
        self._offsets: dict[int, LegacyLogprobs] = {}

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object_name,
            "created": self.created,
            "model": self.call.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }

    # -- plain response -----------------------------------------------------------

    def response(self, outcomes: list[ChoiceOutcome], usage: Usage) -> dict[str, Any]:
        choices = []
        for o in sorted(outcomes, key=lambda o: o.index):
            logprobs = None
            if self.call.logprobs is not None:
                builder = LegacyLogprobs()
                prompt = builder.block(o.prompt_logprobs)
                if not o.prompt_logprobs:
                    builder.offset = len(o.prompt_text)
                generated = builder.block(o.logprobs)
                logprobs = {k: prompt[k] + generated[k] for k in generated}
            choices.append(
                {
                    "text": o.prompt_text + o.text,
                    "index": o.index,
                    "logprobs": logprobs,
                    "finish_reason": o.finish_reason,
                }
            )
        body = self._envelope(choices)
        body["usage"] = usage_json(usage)
        return body

    # -- stream -------------------------------------------------------------------

    def _chunk(self, index: int, text: str, logprobs: Any, finish: str | None) -> dict[str, Any]:
        body = self._envelope(
            [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}]
        )
        if self.call.include_usage:
            body["usage"] = None
        return body

    def opening(self, index: int) -> list[dict[str, Any]]:
        return []

    def delta(self, index: int, event: TextDelta) -> dict[str, Any] | None:
        if not event.text and not event.logprobs:
            return None
        logprobs = None
        if self.call.logprobs is not None:
            builder = self._offsets.setdefault(index, LegacyLogprobs())
            logprobs = builder.block(event.logprobs)
            if event.is_prompt and not event.logprobs:
                builder.offset += len(event.text)
        return self._chunk(index, event.text, logprobs, None)

    def finish(self, index: int, event: Finished) -> dict[str, Any]:
        return self._chunk(index, "", None, event.finish_reason)

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        body = self._envelope([])
        body["usage"] = usage_json(usage)
        return body
