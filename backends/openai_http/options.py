"""The `[models.options]` of an `openai_http` model, validated with errors that name the key.

[models.options]
upstreams = ["http://10.0.0.5:8000", {url = "http://10.0.0.6:8000", api_key = "sk-..."}]
model = "meta-llama/Llama-3.1-8B-Instruct"   # the upstream's name for it
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from backends.errors import ConfigError
from backends.options import integer, seconds, string

KNOWN_KEYS = {
    "upstreams",
    "base_url",
    "api_key",
    "api_key_env",
    "model",
    "headers",
    "connect_timeout",
    "chunk_timeout",
    "total_timeout",
    "max_retries",
    "fail_threshold",
    "cooldown",
    "probe_interval",
    "probe_timeout",
    "max_connections",
    "max_context",
    "token_prompts",
    "stream_usage",
    "logprobs",
    "echo",
    "suffix",
    "response_format",
    "tools",
    "max_response_bytes",
    "max_event_bytes",
}


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    url: str  # base URL ending in /v1 (added when missing)
    api_key: str | None = None

    @property
    def display(self) -> str:
        """The URL without credentials, for logs and status pages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class OpenAIHTTPOptions:
    upstreams: tuple[UpstreamOptions, ...]
    model: str | None = None  # None: the gateway's model id
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 5.0
    chunk_timeout: float = 60.0  # longest wait for the headers or the next data event
    total_timeout: float = 600.0  # the whole exchange, retries included: a hard deadline
    max_retries: int = 2  # other replicas tried before the first byte
    fail_threshold: int = 3  # consecutive failures that eject a replica
    cooldown: float = 10.0  # seconds an ejected replica waits before a probe
    probe_interval: float = 10.0  # active GET /v1/models; 0 turns it off
    probe_timeout: float = 5.0
    max_connections: int = 256
    max_context: int | None = None
    token_prompts: bool = True
    stream_usage: bool = True  # ask for stream_options.include_usage
    # what the upstream honours (vLLM and this gateway do): forwarded when set, refused
    # with a 400 naming the field when not (a false default never hides a field)
    logprobs: bool = False
    echo: bool = False
    suffix: bool = False
    response_format: bool = False  # structured output (json_object, json_schema)
    tools: bool = False  # tools, tool_choice, parallel_tool_calls; tool calls read back
    max_response_bytes: int = 16 * 1024 * 1024  # a whole (non-SSE) response body
    max_event_bytes: int = 4 * 1024 * 1024  # one server-sent event


def parse_options(options: Mapping[str, Any]) -> OpenAIHTTPOptions:
    unknown = sorted(set(options) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}",
            unknown[0],
        )
    default_key = _default_key(options)
    upstreams = _upstreams(options, default_key)
    values: dict[str, Any] = {"upstreams": upstreams}
    if "model" in options:
        values["model"] = string(options, "model")
    if "headers" in options:
        headers = options["headers"]
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError("headers must be a table of string values", "headers")
        values["headers"] = dict(headers)
    for key in ("connect_timeout", "chunk_timeout", "total_timeout", "probe_timeout"):
        if key in options:
            values[key] = _finite(key, seconds(options, key, positive=True))
    for key in ("cooldown", "probe_interval"):
        if key in options:
            values[key] = _finite(key, seconds(options, key, positive=False))
    for key, low in (
        ("max_retries", 0),
        ("fail_threshold", 1),
        ("max_connections", 1),
        ("max_context", 1),
        ("max_response_bytes", 1024),
        ("max_event_bytes", 1024),
    ):
        if key in options:
            values[key] = integer(options, key, low)
    flags = ("token_prompts", "stream_usage", "logprobs", "echo", "suffix", "response_format")
    for key in (*flags, "tools"):
        if key in options:
            if not isinstance(options[key], bool):
                raise ConfigError(f"{key} must be true or false", key)
            values[key] = options[key]
    return OpenAIHTTPOptions(**values)


def _finite(key: str, value: float) -> float:
    """TOML has `inf` and `nan`; neither is a usable number of seconds."""
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number of seconds", key)
    return value


def _default_key(options: Mapping[str, Any]) -> str | None:
    if "api_key" in options and "api_key_env" in options:
        raise ConfigError("set api_key or api_key_env, not both", "api_key")
    if "api_key" in options:
        return string(options, "api_key")
    if "api_key_env" in options:
        name = string(options, "api_key_env")
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"environment variable {name} is not set", "api_key_env")
        return value
    return None


def _upstreams(options: Mapping[str, Any], default_key: str | None) -> tuple[UpstreamOptions, ...]:
    if ("upstreams" in options) == ("base_url" in options):
        raise ConfigError("set exactly one of upstreams (a list) or base_url", "upstreams")
    raw = [options["base_url"]] if "base_url" in options else options["upstreams"]
    key = "base_url" if "base_url" in options else "upstreams"
    if not isinstance(raw, list) or not raw:
        raise ConfigError("upstreams must be a non-empty list", key)
    result: list[UpstreamOptions] = []
    for i, item in enumerate(raw):
        where = key if key == "base_url" else f"upstreams[{i}]"
        api_key = default_key
        if isinstance(item, dict):
            extra = sorted(set(item) - {"url", "api_key"})
            if extra:
                raise ConfigError(f"unknown key {extra[0]!r} (expected url, api_key)", where)
            if "api_key" in item:
                if not isinstance(item["api_key"], str):
                    raise ConfigError("api_key must be a string", f"{where}.api_key")
                api_key = item["api_key"] or None
            item = item.get("url")
        if not isinstance(item, str):
            raise ConfigError("must be a URL string or a table {url, api_key}", where)
        result.append(UpstreamOptions(_base_url(item, where), api_key))
    urls = [u.url for u in result]
    if len(set(urls)) != len(urls):
        raise ConfigError("the same upstream URL is listed twice", key)
    return tuple(result)


def _base_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an http(s) URL", where)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    netloc = parts.netloc
    return f"{parts.scheme}://{netloc}{path}"
