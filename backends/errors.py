"""Errors a backend raises. The gateway maps each to an OpenAI error envelope in one
place (`gateway.errors`); backends map their engines' foreign exceptions to these."""

from __future__ import annotations

from collections.abc import Iterable


class BackendError(Exception):
    """The backend failed (a 5xx for the client). The message must be safe to show:
    no tracebacks or file paths."""


class ConfigError(Exception):
    """A model's configuration is wrong; `key` names the option."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidRequest(Exception):
    """The request cannot be served by this backend (a 400); `param` names the field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def check_token_ids(tokens: Iterable[int], n_vocab: int, param: str) -> None:
    """Raise InvalidRequest naming `param` for the first id outside 0..n_vocab-1."""
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise InvalidRequest(
            f"token id {bad} is outside this model's vocabulary (0..{n_vocab - 1})", param
        )


class ContextLengthExceeded(InvalidRequest):
    def __init__(
        self, prompt_tokens: int, max_tokens: int | None, limit: int, at_least: bool = False
    ) -> None:
        if at_least and max_tokens:  # known from the text's size alone, before tokenising
            message = (
                f"This model's maximum context length is {limit} tokens, however you "
                f"requested at least {prompt_tokens + max_tokens} tokens (at least "
                f"{prompt_tokens} in your prompt; {max_tokens} for the completion). Please "
                "reduce your prompt; or completion length."
            )
        elif at_least:
            message = (
                f"This model's maximum context length is {limit} tokens, however your "
                f"prompt has at least {prompt_tokens} tokens. Please reduce your prompt."
            )
        elif max_tokens:
            message = (
                f"This model's maximum context length is {limit} tokens, however you "
                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in your "
                f"prompt; {max_tokens} for the completion). Please reduce your prompt; "
                "or completion length."
            )
        else:
            message = (
                f"This model's maximum context length is {limit} tokens, however your "
                f"prompt has {prompt_tokens} tokens. Please reduce your prompt."
            )
        super().__init__(message, param="prompt", code="context_length_exceeded")
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.limit = limit


class Overloaded(Exception):
    """Too many requests queued; retry after `retry_after` seconds (a 429)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(BackendError):
    """A remote upstream answered with an error (or not at all). `status` is what the
    client should see: an upstream 4xx keeps its status, a timeout is a 504, an
    unreachable or broken upstream a 502."""

    def __init__(
        self,
        message: str,
        status: int = 502,
        type: str = "server_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after
