"""`/v1/chat/completions`: messages in, `chat.completion` objects and
`chat.completion.chunk` stream chunks out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from backends.base import (
    Capabilities,
    ChatMessage,
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
from gateway.openai.fields import (
    PART_FEATURES,
    Wanted,
    chat_features,
    refuse_unsupported,
)

ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class ChatCall:
    model: str
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int
    user: str | None
    wanted: tuple[Wanted, ...] = ()
    constraint: OutputConstraint | None = None
    tools: structured.Tools = field(default_factory=structured.Tools)

    @property
    def per_prompt(self) -> int:
        return self.n

    def check(self, caps: Capabilities) -> None:
        refuse_unsupported(self.wanted, caps, self.model)
        check_vocabulary(self.sampling, caps, self.model)
        if self.stream and not caps.streaming:
            raise invalid(f"Model '{self.model}' does not support streaming.", "stream")
        if self.logprobs and not caps.logprobs:
            raise invalid(
                f"Model '{self.model}' does not report token log-probabilities.", "logprobs"
            )
        if not caps.chat_template:
            raise invalid(
                f"Model '{self.model}' has no chat template: its GGUF declares none and its "
                "configuration sets none (chat_template). Use /v1/completions instead.",
                "messages",
            )

    def requests(self, request_id: str) -> list[GenerationRequest]:
        out = []
        for j in range(self.n):
            out.append(
                GenerationRequest(
                    params=for_candidate(self.sampling, j),
                    request_id=f"{request_id}/{j}",
                    messages=self.messages,
                    logprobs=self.top_logprobs if self.logprobs else None,
                    constraint=self.constraint,
                    tools=self.tools.tools,
                    tool_choice=self.tools.choice,
                    parallel_tool_calls=self.tools.parallel,
                )
            )
        return out

    def select(self, outcomes: list[ChoiceOutcome]) -> list[ChoiceOutcome]:
        return outcomes


def _content(value: Any, where: str, wanted: list[Wanted]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for k, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in PART_FEATURES:
                feature, what = PART_FEATURES[kind]
                wanted.append(Wanted(feature, where, f"{what} (a '{kind}' part)"))
                continue
            if kind != "text":
                raise invalid(
                    f"Invalid content part in '{where}[{k}]': only text parts "
                    '({"type": "text", "text": ...}) are supported by this gateway.',
                    where,
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"Invalid '{where}[{k}].text': expected a string.", where)
            texts.append(text)
        return "".join(texts)
    raise invalid(f"Invalid type for '{where}': expected a string or an array of parts.", where)


# Fields of an assistant message that carry more than text, and the feature each needs.
_ASSISTANT_FEATURES = {
    "tool_calls": ("tools", "tool calling"),
    "function_call": ("functions", "function calling"),
    "audio": ("audio", "audio output"),
}


def parse_messages(
    value: Any, limits: LimitsSettings | None = None, wanted: list[Wanted] | None = None
) -> tuple[ChatMessage, ...]:
    """The messages, within `limits` (how many, and their characters all together),
    counted before any template renders them. Parts and fields that need a backend
    feature (images, tool calls, ...) are added to `wanted`."""
    limits = limits or LimitsSettings()
    wanted = [] if wanted is None else wanted
    if not isinstance(value, list) or not value:
        raise invalid("Invalid 'messages': expected a non-empty array of messages.", "messages")
    if len(value) > limits.max_messages:
        raise p.limit_exceeded(
            "messages",
            "the number of messages is",
            len(value),
            limits.max_messages,
            "max_messages",
        )
    messages = []
    chars = 0
    for i, raw in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise invalid(f"Invalid type for '{where}': expected an object.", where)
        role = raw.get("role")
        if role == "function":
            wanted.append(Wanted("functions", f"{where}.role", "function calling"))
            continue
        if role == "assistant":
            for key, (feature, what) in _ASSISTANT_FEATURES.items():
                if raw.get(key):
                    wanted.append(Wanted(feature, f"{where}.{key}", what))
            if raw.get("refusal") is not None:
                raise invalid(
                    f"Invalid '{where}.refusal': assistant refusals cannot be given to "
                    "this gateway's chat templates; send the text as 'content'.",
                    f"{where}.refusal",
                )
        if role not in ROLES:
            raise invalid(
                f"Invalid value for '{where}.role': expected one of {', '.join(ROLES)}.",
                f"{where}.role",
            )
        if role != "assistant" and raw.get("content") is None:
            raise invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content")
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid(f"Invalid type for '{where}.name': expected a string.", f"{where}.name")
        content = _content(raw.get("content"), f"{where}.content", wanted)
        chars += len(content) + len(name or "")
        if chars > limits.max_chat_chars:
            raise p.limit_exceeded(
                "messages",
                f"the text of the messages (up to {where}) has this many characters:",
                chars,
                limits.max_chat_chars,
                "max_chat_chars",
            )
        messages.append(
            ChatMessage(
                role,
                content,
                name,
                structured.message_tool_calls(raw, where) if role == "assistant" else (),
                structured.tool_call_id(raw, where),
            )
        )
    return tuple(messages)


def parse_chat_request(body: p.Body, limits: LimitsSettings | None = None) -> ChatCall:
    limits = limits or LimitsSettings()
    model = p.get_str(body, "model", required=True)
    assert model is not None
    if "messages" not in body:
        raise invalid("Missing required parameter: 'messages'.", "messages")
    wanted = chat_features(dict(body))
    messages = parse_messages(body["messages"], limits, wanted)
    stream = p.get_bool(body, "stream")
    n = p.get_int(body, "n", 1, low=1, high=128)
    assert n is not None
    logprobs = p.get_bool(body, "logprobs")
    top = p.get_int(body, "top_logprobs", None, low=0, high=20)
    if top is not None and not logprobs:
        raise invalid("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    constraint = structured.response_format(dict(body))
    tools = structured.tools(dict(body))
    if constraint is not None and tools.tools and tools.choice.mode != "none":
        # Both would constrain the same output; one would be dropped without a word.
        raise invalid(
            "'response_format' cannot be combined with 'tools' here: a tool call is "
            "constrained by its own schema. Send one of them, or tool_choice 'none'.",
            "response_format",
        )
    return ChatCall(
        model=model,
        messages=messages,
        sampling=sampling_from(
            body, "max_completion_tokens", "max_tokens", default_max_tokens=None, limits=limits
        ),
        n=n,
        stream=stream,
        include_usage=p.get_stream_options(body, stream),
        logprobs=logprobs,
        top_logprobs=top or 0,
        user=p.get_str(body, "user"),
        wanted=tuple(wanted),
        constraint=constraint,
        tools=tools,
    )


def _message(o: ChoiceOutcome) -> dict[str, Any]:
    if o.tool_calls:
        return {
            "role": "assistant",
            "content": o.text or None,
            "refusal": None,
            "tool_calls": structured.tool_calls_json(o.tool_calls),
        }
    return {"role": "assistant", "content": o.text, "refusal": None}


def chat_logprob(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in entry.top
        ],
    }


class ChatEncoder:
    def __init__(self, call: ChatCall, fingerprint: str) -> None:
        self.call = call
        self.id = new_id("chatcmpl")
        self.created = int(time.time())
        self.fingerprint = fingerprint

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.call.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }

    def _logprobs(self, entries: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> Any:
        if not self.call.logprobs:
            return None
        # OpenAI's chat log-probs list the message's tokens only, not the end token
        # that closed it (the legacy completions shape lists it).
        content = [chat_logprob(e) for e in entries if not e.is_end]
        return {"content": content, "refusal": None}

    def response(self, outcomes: list[ChoiceOutcome], usage: Usage) -> dict[str, Any]:
        choices = [
            {
                "index": o.index,
                "message": _message(o),
                "logprobs": self._logprobs(o.logprobs),
                "finish_reason": o.finish_reason,
            }
            for o in sorted(outcomes, key=lambda o: o.index)
        ]
        body = self._envelope("chat.completion", choices)
        body["usage"] = usage_json(usage)
        return body

    def _chunk(
        self, index: int, delta: dict[str, Any], logprobs: Any, finish: str | None
    ) -> dict[str, Any]:
        body = self._envelope(
            "chat.completion.chunk",
            [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        )
        if self.call.include_usage:
            body["usage"] = None
        return body

    def opening(self, index: int) -> list[dict[str, Any]]:
        """OpenAI's first chunk of each choice carries the role and empty content."""
        return [
            self._chunk(index, {"role": "assistant", "content": "", "refusal": None}, None, None)
        ]

    def delta(self, index: int, event: TextDelta) -> dict[str, Any] | None:
        logprobs = self._logprobs(event.logprobs)
        # A token whose text is held back (part of a UTF-8 character, a possible stop
        # string) still gets its log-prob entry, in a chunk with empty content.
        if not event.text and not (logprobs and logprobs["content"]):
            return None
        return self._chunk(index, {"content": event.text}, logprobs, None)

    def finish(self, index: int, event: Finished) -> dict[str, Any] | list[dict[str, Any]]:
        last = self._chunk(index, {}, None, event.finish_reason)
        if not event.tool_calls:
            return last
        # As OpenAI streams them: the calls in a chunk of their own, then the finish.
        calls = structured.tool_calls_json(event.tool_calls, with_index=True)
        return [self._chunk(index, {"tool_calls": calls}, None, None), last]

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        body = self._envelope("chat.completion.chunk", [])
        body["usage"] = usage_json(usage)
        return body
