"""llama.cpp server's answers to /completion and /infill: one object with `content`,
`stop`, `timings` and the counts editors show, or, streamed, `data:` events of
`{"content": ...}` and a last one with `stop: true` and the totals (no `[DONE]`)."""

from __future__ import annotations

import time
from typing import Any

from backends.base import Finished, TextDelta, Usage
from gateway.generation import ChoiceOutcome
from gateway.llamacpp.calls import NativeCall

STOP_TYPES = {"stop": "eos", "length": "limit"}


class NativeEncoder:
    """Timings are measured at the gateway: `prompt_ms` from the request's arrival to
    the first token (queue, tokenising and prompt processing), `predicted_ms` from
    there to the end."""

    def __init__(self, call: NativeCall, fingerprint: str) -> None:
        self.call = call
        self.first_at = time.perf_counter()  # made once the first event has arrived
        self.text: list[str] = []
        self.predicted = 0

    def _final(self, content: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
        prompt_ms = max(0.0, (self.first_at - self.call.started) * 1000)
        predicted_ms = max(0.0, (time.perf_counter() - self.first_at) * 1000)
        prompt_n, predicted_n = usage.prompt_tokens, usage.completion_tokens
        s = self.call.sampling
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": -1,
            "stop": True,
            "model": self.call.model,
            "tokens_predicted": predicted_n,
            "tokens_evaluated": prompt_n,
            "generation_settings": {
                "n_predict": -1 if s.max_tokens is None else s.max_tokens,
                "temperature": s.temperature,
                "top_k": s.top_k,
                "top_p": s.top_p,
                "min_p": s.min_p,
                "repeat_penalty": s.repeat_penalty,
                "stop": list(s.stop),
            },
            "has_new_line": "\n" in "".join(self.text) or "\n" in content,
            "truncated": False,
            "stop_type": STOP_TYPES.get(finish_reason, "none"),
            "stopping_word": "",
            # what the sequence held at its end: this gateway reuses no prompt
            # cache across requests, so nothing was taken from an earlier one
            "tokens_cached": prompt_n + predicted_n,
            "timings": {
                "prompt_n": prompt_n,
                "prompt_ms": round(prompt_ms, 3),
                "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
                "prompt_per_second": round(prompt_n * 1000 / prompt_ms, 3) if prompt_ms else 0.0,
                "predicted_n": predicted_n,
                "predicted_ms": round(predicted_ms, 3),
                "predicted_per_token_ms": (
                    round(predicted_ms / predicted_n, 3) if predicted_n else 0.0
                ),
                "predicted_per_second": (
                    round(predicted_n * 1000 / predicted_ms, 3) if predicted_ms else 0.0
                ),
            },
        }

    def response(self, outcomes: list[ChoiceOutcome], usage: Usage) -> dict[str, Any]:
        outcome = outcomes[0]
        body = self._final(outcome.text, outcome.finish_reason, usage)
        return select_fields(body, self.call.response_fields)

    def opening(self, index: int) -> list[dict[str, Any]]:
        return []

    def delta(self, index: int, event: TextDelta) -> dict[str, Any] | None:
        if not event.text or event.is_prompt:
            return None
        self.text.append(event.text)
        self.predicted += len(event.token_ids)
        return {
            "index": 0,
            "content": event.text,
            "tokens": list(event.token_ids),
            "stop": False,
            "id_slot": -1,
            "tokens_predicted": self.predicted,
            "tokens_evaluated": 0,
        }

    def finish(self, index: int, event: Finished) -> dict[str, Any]:
        return self._final("", event.finish_reason, event.usage)

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        raise AssertionError("llama.cpp's stream has no usage chunk")


def select_fields(body: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """llama.cpp's `response_fields`: only these, each under its path as the key
    ("timings/prompt_n"); a path that names nothing is left out."""
    if not paths:
        return body
    out: dict[str, Any] = {}
    for path in paths:
        node: Any = body
        for part in path.split("/"):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            out[path] = node
    return out
