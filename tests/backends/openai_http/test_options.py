"""The limits among the `openai_http` options: defaults, and errors that name the key."""

from __future__ import annotations

import math
from typing import Any

import pytest

from backends.errors import ConfigError
from backends.openai_http.options import parse_options

BASE = {"base_url": "http://127.0.0.1:9"}


def test_limit_defaults_and_values() -> None:
    opts = parse_options(BASE)
    assert (opts.max_response_bytes, opts.max_event_bytes) == (16 * 2**20, 4 * 2**20)
    opts = parse_options({**BASE, "max_response_bytes": 2048, "max_event_bytes": 1024,
                          "total_timeout": 5, "chunk_timeout": 0.5})
    assert (opts.max_response_bytes, opts.max_event_bytes) == (2048, 1024)
    assert (opts.total_timeout, opts.chunk_timeout) == (5.0, 0.5)


@pytest.mark.parametrize(("key", "value"), [
    ("max_response_bytes", 1023),
    ("max_response_bytes", "16MiB"),
    ("max_event_bytes", 0),
    ("max_event_bytes", True),
    ("total_timeout", math.inf),
    ("chunk_timeout", math.nan),
    ("cooldown", math.inf),
    ("total_timeout", 0),
])
def test_bad_limits_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_options({**BASE, key: value})
    assert raised.value.key == key
