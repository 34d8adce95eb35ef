"""The gateway's errors and the one place where any exception becomes an OpenAI error
envelope: `{"error": {"message", "type", "param", "code"}}`, all four keys present."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from backends import errors as backend_errors


@dataclass
class APIError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


MAX_RETRY_AFTER = 3600


def retry_after_header(seconds: float) -> str:
    """Whole seconds from 1 to an hour: a backend's NaN, infinity or absurd delay
    never reaches a client (nor crashes `round`)."""
    if not math.isfinite(seconds):
        return str(MAX_RETRY_AFTER)
    return str(min(MAX_RETRY_AFTER, max(1, round(seconds))))


def to_api_error(exc: BaseException) -> APIError:
    """Map any exception to the error the client sees. Unexpected exceptions become a
    generic 500 that says nothing about the code that failed."""
    match exc:
        case APIError():
            return exc
        case backend_errors.InvalidRequest():
            return APIError(400, str(exc), "invalid_request_error", exc.param, exc.code)
        case backend_errors.Overloaded():
            return APIError(
                429,
                str(exc),
                "rate_limit_error",
                None,
                "rate_limit_exceeded",
                {"retry-after": retry_after_header(exc.retry_after)},
            )
        case backend_errors.UpstreamError():
            headers = None
            if exc.retry_after is not None:
                headers = {"retry-after": retry_after_header(exc.retry_after)}
            return APIError(exc.status, str(exc), exc.type, exc.param, exc.code, headers)
        case backend_errors.BackendError():
            return APIError(500, str(exc), "server_error", None, "backend_error")
        case _:
            return APIError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                "internal_error",
            )
