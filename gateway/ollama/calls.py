"""Ollama's `POST /api/generate` and `POST /api/chat` parsed into neutral calls."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from backends.base import (
    Capabilities,
    ChatMessage,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    ToolCall,
    ToolSpec,
)
from gateway.errors import invalid
from gateway.generation import ChoiceOutcome
from gateway.limits import LimitsSettings
from gateway.openai import params as p
from gateway.openai.common import check_vocabulary
from gateway.openai.fields import Wanted, refuse_unsupported

# Options that set up the runner (threads, GPU layers, memory mapping, batch size):
# the gateway's configuration decides those, so a request's values are accepted and
# not applied. Sampling options are applied; the rest are refused when set.
_RUNNER_OPTIONS = {
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "num_thread", "numa",
    "use_mmap", "use_mlock", "vocab_only", "num_keep", "repeat_last_n", "penalize_newline",
}  # fmt: skip
_SAMPLING_OPTIONS = {
    "num_predict", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
    "repeat_penalty", "presence_penalty", "frequency_penalty",
}  # fmt: skip


@dataclass
class OllamaCall:
    model: str
    operation: str  # "generate" or "chat"
    sampling: SamplingParams
    stream: bool
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    raw: bool = False
    messages: tuple[ChatMessage, ...] = ()
    constraint: OutputConstraint | None = None
    tools: tuple[ToolSpec, ...] = ()
    wanted: tuple[Wanted, ...] = ()
    user: str | None = None
    include_usage: bool = False
    started: float = field(default_factory=time.perf_counter)
    # /api/generate without `raw` renders the prompt with the model's template when it
    # has one (decided by `check`, per candidate model)
    templated: bool = True

    @property
    def per_prompt(self) -> int:
        return 1

    def check(self, caps: Capabilities) -> None:
        refuse_unsupported(self.wanted, caps, self.model)
        check_vocabulary(self.sampling, caps, self.model)
        if self.stream and not caps.streaming:
            raise invalid(f"Model '{self.model}' does not support streaming.", "stream")
        if self.suffix is not None and not caps.suffix:
            raise invalid(
                f"Model '{self.model}' cannot fill in the middle ('suffix'): its GGUF declares "
                "no FIM prefix/suffix/middle tokens.",
                "suffix",
            )
        if self.operation == "chat" and not caps.chat_template:
            raise invalid(
                f"Model '{self.model}' has no chat template; use /api/generate with raw.",
                "messages",
            )
        self.templated = (
            self.operation == "generate"
            and not self.raw
            and self.suffix is None
            and caps.chat_template
        )

    def requests(self, request_id: str) -> list[GenerationRequest]:
        rid = f"{request_id}/0"
        common: dict[str, Any] = {"params": self.sampling, "request_id": rid}
        if self.constraint is not None:
            common["constraint"] = self.constraint
        if self.operation == "chat":
            return [GenerationRequest(messages=self.messages, tools=self.tools, **common)]
        if self.templated:
            turns = [ChatMessage("system", self.system)] if self.system else []
            messages = (*turns, ChatMessage("user", self.prompt))
            return [GenerationRequest(messages=messages, **common)]
        prompt = self.prompt if self.system is None or self.raw else f"{self.system}\n{self.prompt}"
        return [GenerationRequest(prompt=prompt, suffix=self.suffix, **common)]

    def select(self, outcomes: list[ChoiceOutcome]) -> list[ChoiceOutcome]:
        return outcomes


def _options(body: p.Body, limits: LimitsSettings) -> SamplingParams:
    """Ollama's `options` with its defaults (temperature 0.8, top_p 0.9, top_k 40,
    repeat_penalty 1.1, num_predict -1: until the model stops or the context is full)."""
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise invalid("Invalid 'options': expected an object.", "options")
    for name, value in options.items():
        if name in _SAMPLING_OPTIONS or name in _RUNNER_OPTIONS or value in (None, 0, False):
            continue
        raise invalid(
            f"Invalid 'options.{name}': this gateway does not apply it; remove it.",
            f"options.{name}",
        )
    num_predict = p.get_int(options, "num_predict", -1, low=-2, high=p.INT32_MAX)
    seed = p.get_int(options, "seed", None, low=p.INT64[0], high=p.INT64[1])
    return SamplingParams(
        max_tokens=None if num_predict is None or num_predict < 0 else num_predict,
        temperature=p.get_float(options, "temperature", 0.8, 0.0, 2.0),
        top_p=p.get_float(options, "top_p", 0.9, 0.0, 1.0),
        top_k=p.get_int(options, "top_k", 40, low=0, high=p.INT32_MAX) or 0,
        min_p=p.get_float(options, "min_p", 0.0, 0.0, 1.0),
        presence_penalty=p.get_float(options, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=p.get_float(options, "frequency_penalty", 0.0, -2.0, 2.0),
        repeat_penalty=p.get_float(options, "repeat_penalty", 1.1, 0.0, 10.0),
        seed=seed,
        stop=p.get_stop(options, limits=limits),
    )


def _format(body: p.Body) -> tuple[OutputConstraint | None, tuple[Wanted, ...]]:
    value = body.get("format")
    if value in (None, ""):
        return None, ()
    wanted = (Wanted("response_format", "format", "structured output"),)
    if value == "json":
        return OutputConstraint("json_object"), wanted
    if isinstance(value, dict):
        return OutputConstraint("json_schema", value), wanted
    raise invalid("Invalid 'format': expected \"json\" or a JSON schema object.", "format")


def _common(body: p.Body, limits: LimitsSettings) -> dict[str, Any]:
    model = p.get_str(body, "model", required=True)
    if body.get("images"):
        raise invalid("'images' asks for image input, which this gateway does not serve.", "images")
    keep_alive = body.get("keep_alive")  # accepted: models stay loaded while served
    if keep_alive is not None and not isinstance(keep_alive, str | int | float):
        raise invalid("Invalid 'keep_alive': expected a duration.", "keep_alive")
    constraint, wanted = _format(body)
    return {
        "model": model,
        "sampling": _options(body, limits),
        "stream": p.get_bool(body, "stream", default=True),
        "constraint": constraint,
        "wanted": wanted,
    }


def parse_generate(body: p.Body, limits: LimitsSettings) -> OllamaCall:
    prompt = p.get_str(body, "prompt", default="") or ""
    suffix = p.get_str(body, "suffix")
    system = p.get_str(body, "system")
    if p.get_str(body, "template"):
        raise invalid(
            "'template' (a per-request prompt template) is not supported; send 'raw': true "
            "with the prompt already formatted.",
            "template",
        )
    if body.get("context"):
        raise invalid(
            "'context' (tokens of an earlier answer) is not supported; use /api/chat for "
            "conversations.",
            "context",
        )
    chars = len(prompt) + len(suffix or "") + len(system or "")
    if chars > limits.max_prompt_chars:
        raise p.limit_exceeded(
            "prompt", "the prompt text has this many characters:", chars,
            limits.max_prompt_chars, "max_prompt_chars",
        )  # fmt: skip
    return OllamaCall(
        operation="generate",
        prompt=prompt,
        suffix=suffix or None,
        system=system or None,
        raw=p.get_bool(body, "raw"),
        **_common(body, limits),
    )


def parse_chat(body: p.Body, limits: LimitsSettings) -> OllamaCall:
    raw = body.get("messages")
    if raw is None:
        raw = []  # no messages: Ollama's request to load the model
    if not isinstance(raw, list):
        raise invalid("Invalid 'messages': expected an array of messages.", "messages")
    messages = tuple(_message(m, i) for i, m in enumerate(raw))
    chars = sum(len(m.content) for m in messages)
    if chars > limits.max_prompt_chars:
        raise p.limit_exceeded(
            "messages", "the messages have this many characters:", chars,
            limits.max_prompt_chars, "max_prompt_chars",
        )  # fmt: skip
    tools = _tools(body.get("tools"))
    common = _common(body, limits)
    if tools and common["constraint"] is not None:
        # Both would constrain the same answer; one would be dropped without a word.
        raise invalid("'format' cannot be combined with 'tools': send one of them.", "format")
    if tools:
        common["wanted"] = (*common["wanted"], Wanted("tools", "tools", "tool calling"))
    return OllamaCall(operation="chat", messages=messages, tools=tools, **common)


def _message(value: Any, i: int) -> ChatMessage:
    where = f"messages[{i}]"
    if not isinstance(value, dict):
        raise invalid(f"Invalid '{where}': expected an object.", where)
    role = value.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise invalid(
            f"Invalid '{where}.role': expected system, user, assistant or tool.", f"{where}.role"
        )
    content = value.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise invalid(f"Invalid '{where}.content': expected a string.", f"{where}.content")
    if value.get("images"):
        raise invalid(
            f"'{where}.images' asks for image input, which this gateway does not serve.",
            f"{where}.images",
        )
    calls = []
    raw_calls = value.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise invalid(f"Invalid '{where}.tool_calls': expected an array.", f"{where}.tool_calls")
    for k, call in enumerate(raw_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(
                f'Invalid \'{where}.tool_calls[{k}]\': expected {{"function": {{"name", '
                '"arguments"}}}.',
                f"{where}.tool_calls",
            )
        arguments = function.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(f"call_{i}_{k}", function["name"], text))
    name = value.get("tool_name")
    return ChatMessage(
        role=role,
        content=content,
        name=name if isinstance(name, str) else None,
        tool_calls=tuple(calls),
    )


def _tools(value: Any) -> tuple[ToolSpec, ...]:
    if value in (None, []):
        return ()
    if not isinstance(value, list):
        raise invalid("Invalid 'tools': expected an array of tools.", "tools")
    out = []
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(
                f'Invalid \'tools[{i}]\': expected {{"type": "function", "function": '
                '{"name", "parameters"}}.',
                "tools",
            )
        parameters = function.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise invalid(f"Invalid 'tools[{i}].function.parameters': expected an object.", "tools")
        description = function.get("description")
        out.append(
            ToolSpec(
                function["name"],
                description if isinstance(description, str) else None,
                parameters,
            )
        )
    return tuple(out)
