"""Ollama's answers: one object (`response` for /api/generate, `message` for
/api/chat) with `done`, `done_reason` and the counts and durations (nanoseconds), or,
streamed, one such object per line with the text so far cut into pieces and
`done: true` on the last one."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from backends.base import Finished, TextDelta, ToolCall, Usage
from gateway.generation import ChoiceOutcome
from gateway.ollama.calls import OllamaCall


def created_at() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = call.arguments
        out.append({"function": {"name": call.name, "arguments": arguments}})
    return out


class OllamaEncoder:
    """Durations are measured at the gateway: `prompt_eval_duration` from the
    request's arrival to the first token, `eval_duration` from there to the end."""

    def __init__(self, call: OllamaCall, fingerprint: str) -> None:
        self.call = call
        self.first_at = time.perf_counter()  # made once the first event has arrived

    def _piece(self, text: str, tool_calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.call.model, "created_at": created_at()}
        if self.call.operation == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = _tool_calls(tool_calls)
            body["message"] = message
        else:
            body["response"] = text
        return body

    def _last(self, text: str, event: Finished | ChoiceOutcome, usage: Usage) -> dict[str, Any]:
        now = time.perf_counter()
        body = self._piece(text, event.tool_calls)
        body.update(
            done=True,
            done_reason="length" if event.finish_reason == "length" else "stop",
            total_duration=int((now - self.call.started) * 1e9),
            load_duration=0,
            prompt_eval_count=usage.prompt_tokens,
            prompt_eval_duration=int(max(0.0, self.first_at - self.call.started) * 1e9),
            eval_count=usage.completion_tokens,
            eval_duration=int(max(0.0, now - self.first_at) * 1e9),
        )
        return body

    def response(self, outcomes: list[ChoiceOutcome], usage: Usage) -> dict[str, Any]:
        outcome = outcomes[0]
        return self._last(outcome.text, outcome, usage)

    def opening(self, index: int) -> list[dict[str, Any]]:
        return []

    def delta(self, index: int, event: TextDelta) -> dict[str, Any] | None:
        if not event.text or event.is_prompt:
            return None
        body = self._piece(event.text)
        body["done"] = False
        return body

    def finish(self, index: int, event: Finished) -> dict[str, Any]:
        return self._last("", event, event.usage)

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        raise AssertionError("Ollama's stream has no usage chunk")
