"""Render chat messages with a model's Jinja chat template.

Templates come from GGUF files, which are untrusted input: they are rendered only in
Jinja's `ImmutableSandboxedEnvironment` (CVE-2024-34359 was arbitrary code execution
through a template rendered without a sandbox), with no loader, so a template can
neither reach Python internals nor include files; and every render is bounded in time
and size (`template_guard`). A template is tried once at load on a short conversation,
so one that fails or hangs stops the model from loading, with a clear reason.

`render_parts` tells the template's own markup apart from the messages' text, so that
only the markup may be tokenised into control tokens (prompts.py).

A template that mentions a `tools` variable renders tools itself (`supports_tools`):
it gets them in OpenAI's shape (`{"type": "function", "function": {...}}`), and the
history in the shapes Hugging Face templates expect: an assistant's `tool_calls`
(`{"id", "type": "function", "function": {"name", "arguments": <object>}}`) and a
`tool` message's `tool_call_id` and `name`.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError

from backends.base import ChatMessage
from backends.errors import ConfigError, InvalidRequest
from backends.llama_cpp.template_guard import (
    GuardedEnvironment,
    RenderLimitExceeded,
    RenderLimits,
)

# The conversations a template is tried on at load: the first must render.
DRY_RUNS: tuple[tuple[ChatMessage, ...], ...] = (
    (ChatMessage("user", "Hello"),),
    (
        ChatMessage("system", "You are helpful."),
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi."),
        ChatMessage("user", "Bye"),
    ),
)
# Markers around each message's text while rendering `render_parts`: two characters of
# Unicode's supplementary private use area with a per-render nonce between them, so
# that no client text can forge one.
_OPEN, _CLOSE = "\U0010fde0", "\U0010fde1"


class ChatTemplate:
    def __init__(
        self,
        source: str,
        bos_token: str,
        eos_token: str,
        limits: RenderLimits | None = None,
    ) -> None:
        self.limits = limits or RenderLimits()
        env = GuardedEnvironment(self.limits, trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError(
                f"the chat template is not valid Jinja: {exc}", "chat_template"
            ) from None
        env.adopt(self._template.root_render_func.__globals__)
        self._env = env
        self._bos = bos_token
        self._eos = eos_token
        self.supports_tools = re.search(r"\btools\b", source) is not None
        self._dry_run()

    def _dry_run(self) -> None:
        for i, messages in enumerate(DRY_RUNS):
            try:
                self.render(messages)
            except InvalidRequest as exc:
                # A template may refuse roles it does not know (a system message, say);
                # it must render one user message, and must never run over its limits.
                if i == 0 or exc.code == "template_limit_exceeded":
                    raise ConfigError(
                        f"the chat template fails on a {len(messages)}-message test "
                        f"conversation: {exc}",
                        "chat_template",
                    ) from None

    def render(
        self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None
    ) -> str:
        return self._render(_payload(messages), tools)

    def render_parts(
        self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None
    ) -> list[tuple[str, bool]] | None:
        """The rendered prompt as (text, is_message_text) parts, in order; None when the
        template did not keep the messages' text intact (it sliced or rewrote it), so
        that the parts cannot be told apart."""
        nonce = secrets.token_hex(8)
        payload = _payload(messages)
        cores: list[str] = []
        for i, item in enumerate(payload):
            text = item["content"]
            core = text.strip()
            start = text.find(core) if core else len(text)
            # Whitespace outside the markers: a template's `trim` still removes it.
            item["content"] = (
                f"{text[:start]}{_OPEN}{nonce}o{i}{_CLOSE}{core}"
                f"{_OPEN}{nonce}c{i}{_CLOSE}{text[start + len(core) :]}"
            )
            cores.append(core)
        rendered = self._render(payload, tools)
        return _split(rendered, nonce, cores)

    def _render(
        self, payload: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        template = self._template
        variables: dict[str, Any] = {
            "messages": payload,
            "add_generation_prompt": True,
            "bos_token": self._bos,
            "eos_token": self._eos,
        }
        if tools:
            variables["tools"] = tools
        try:
            return self._env.run(lambda: template.generate(**variables))
        except RenderLimitExceeded as exc:
            raise InvalidRequest(str(exc), "messages", "template_limit_exceeded") from None
        except SecurityError:
            raise InvalidRequest(
                "the model's chat template tried an operation the sandbox forbids", "messages"
            ) from None
        except TemplateError as exc:
            raise InvalidRequest(
                f"the chat template could not render these messages: {exc}", "messages"
            ) from None
        except (MemoryError, RecursionError) as exc:
            raise InvalidRequest(
                f"the chat template ran out of resources ({type(exc).__name__})",
                "messages",
                "template_limit_exceeded",
            ) from None
        except Exception as exc:  # e.g. {% include %} with no loader: never a 500
            raise InvalidRequest(
                f"the chat template failed on these messages ({type(exc).__name__})", "messages"
            ) from None


def _payload(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    payload: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name:
            item["name"] = m.name
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        payload.append(item)
    return payload


def _arguments(text: str) -> Mapping[str, Any] | str:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _split(rendered: str, nonce: str, cores: list[str]) -> list[tuple[str, bool]] | None:
    marker = re.compile(f"{_OPEN}{nonce}([oc])([0-9]+){_CLOSE}")
    parts: list[tuple[str, bool]] = []
    pos = 0
    open_index: int | None = None
    for match in marker.finditer(rendered):
        kind, index = match.group(1), int(match.group(2))
        between = rendered[pos : match.start()]
        if kind == "o":
            if open_index is not None or index >= len(cores):
                return None
            parts.append((between, False))
            open_index = index
        else:
            if open_index != index or between != cores[index]:
                return None  # the template sliced or rewrote the text
            parts.append((between, True))
            open_index = None
        pos = match.end()
    if open_index is not None:
        return None
    parts.append((rendered[pos:], False))
    for text, is_message in parts:
        if nonce in text or (not is_message and (_OPEN in text or _CLOSE in text)):
            return None  # a marker was cut apart
    return [(text, is_message) for text, is_message in parts if text]


class _TemplateRaised(TemplateError):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)
