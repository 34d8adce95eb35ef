"""Render chat messages with a model's Jinja chat template.

Templates come from GGUF files, which are untrusted input: they are rendered only in
Jinja's `ImmutableSandboxedEnvironment` (CVE-2024-34359 was arbitrary code execution
through a template rendered without a sandbox), with no loader, so a template can
neither reach Python internals nor include files.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.base import ChatMessage
from backends.errors import InvalidRequest


class ChatTemplate:
    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise InvalidRequest(
                f"the model's chat template is not valid Jinja: {exc}", "messages"
            ) from None
        self._bos = bos_token
        self._eos = eos_token

    def render(self, messages: Sequence[ChatMessage]) -> str:
        payload: list[dict[str, Any]] = []
        for m in messages:
            item: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name:
                item["name"] = m.name
            payload.append(item)
        try:
            return self._template.render(
                messages=payload,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except SecurityError:
            raise InvalidRequest(
                "the model's chat template tried an operation the sandbox forbids", "messages"
            ) from None
        except TemplateError as exc:
            raise InvalidRequest(
                f"the chat template could not render these messages: {exc}", "messages"
            ) from None
        except Exception as exc:  # e.g. {% include %} with no loader: never a 500
            raise InvalidRequest(
                f"the chat template failed on these messages ({type(exc).__name__})", "messages"
            ) from None


class _TemplateRaised(TemplateError):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)
