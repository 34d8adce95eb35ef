"""Unit tests of the one place where exceptions become envelopes."""

from __future__ import annotations

import math

import pytest

from backends import errors as backend_errors
from gateway.errors import MAX_RETRY_AFTER, to_api_error


@pytest.mark.parametrize(
    ("delay", "header"),
    [
        (0.2, "1"),
        (2.6, "3"),
        (math.inf, str(MAX_RETRY_AFTER)),
        (math.nan, str(MAX_RETRY_AFTER)),
        (1e12, str(MAX_RETRY_AFTER)),
        (-5, "1"),
    ],
)
def test_retry_after_is_whole_seconds_within_an_hour(delay: float, header: str) -> None:
    for exc in (
        backend_errors.Overloaded("busy", retry_after=delay),
        backend_errors.UpstreamError("busy", status=503, retry_after=delay),
    ):
        error = to_api_error(exc)
        assert error.headers == {"retry-after": header}
