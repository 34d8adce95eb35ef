"""The [server] keys of the HTTP edge: parsed, defaulted, and refused with the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigFileError, ServerSettings, parse_config

MODELS = [{"id": "m", "backend": "llama_cpp"}]


def server(**keys: Any) -> ServerSettings:
    return parse_config({"server": keys, "models": MODELS}, Path("g.toml"), {}).server


def test_defaults() -> None:
    s = server()
    assert (s.allowed_hosts, s.cors_origins) == ((), ())
    assert s.max_header_bytes == 65536 and s.max_connections == 1024
    assert (s.header_timeout_seconds, s.body_timeout_seconds) == (10, 60)
    assert (s.keep_alive_seconds, s.shutdown_grace_seconds) == (5, 30)


def test_values_are_read() -> None:
    s = server(
        allowed_hosts=["Gateway.Example.com", "*.internal", "[::1]", "*"],
        cors_origins=["https://App.example.com/", "http://localhost:3000", "*"],
        max_header_bytes=8192,
        header_timeout_seconds=2.5,
        shutdown_grace_seconds=0,
        max_connections=10,
    )
    assert s.allowed_hosts == ("gateway.example.com", "*.internal", "[::1]", "*")
    assert s.cors_origins == ("https://app.example.com", "http://localhost:3000", "*")
    assert (s.max_header_bytes, s.header_timeout_seconds) == (8192, 2.5)
    assert (s.shutdown_grace_seconds, s.max_connections) == (0.0, 10)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_header_bytes", 100),
        ("max_header_bytes", "64k"),
        ("max_connections", 0),
        ("max_connections", True),
        ("header_timeout_seconds", 0),
        ("header_timeout_seconds", "10s"),
        ("keep_alive_seconds", -1),
        ("body_timeout_seconds", False),
        ("shutdown_grace_seconds", -1),
        ("allowed_hosts", "localhost"),
        ("allowed_hosts", ["http://gateway.example.com"]),
        ("allowed_hosts", ["a b"]),
        ("cors_origins", ["app.example.com"]),
        ("cors_origins", ["https://app.example.com/path"]),
        ("cors_origins", [5]),
    ],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigFileError, match=f"server.{key}"):
        server(**{key: value})
