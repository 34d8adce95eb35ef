"""The `openai_http` backend: remote OpenAI-compatible servers (vLLM, TGI, llama.cpp's
server, another gateway) behind one model id, with replicas, health and retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import structlog

from backends.base import (
    Backend,
    Capabilities,
    GenerationEvent,
    GenerationRequest,
    Health,
    ModelInfo,
)
from backends.errors import BackendError, UpstreamError
from backends.openai_http import errors
from backends.openai_http.health import HealthProber
from backends.openai_http.options import OpenAIHTTPOptions, parse_options
from backends.openai_http.relay import Exchange, Limits, read_body, relay
from backends.openai_http.replicas import Replica, ReplicaPool
from backends.openai_http.wire import build_body

log = structlog.get_logger("backends.openai_http")
ERROR_BODY_BYTES = 64 * 1024  # of an upstream's error answer: the message is in there


class OpenAIHTTPBackend(Backend):
    name = "openai_http"

    def __init__(self, model_id: str, opts: OpenAIHTTPOptions) -> None:
        self.model_id = model_id
        self.opts = opts
        self.upstream_model = opts.model or model_id
        self.pool = ReplicaPool(opts.upstreams, opts.fail_threshold, opts.cooldown)
        self._client: httpx.AsyncClient | None = None
        self._prober: HealthProber | None = None
        self.limits = Limits(opts.total_timeout, opts.chunk_timeout,
                             opts.max_response_bytes, opts.max_event_bytes)

    @classmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        return cls(model_id, parse_options(options))

    # -- lifecycle ----------------------------------------------------------------

    async def load(self) -> None:
        """Open the shared connection pool and probe every replica once. Unreachable
        replicas start ejected rather than failing startup: upstreams come and go."""
        opts = self.opts
        self._client = httpx.AsyncClient(
            # Uncompressed answers: one compressed network read can expand a
            # thousandfold before the body limits could count it.
            headers={"accept-encoding": "identity", **opts.headers},
            timeout=httpx.Timeout(
                connect=opts.connect_timeout,
                read=opts.chunk_timeout,
                write=opts.chunk_timeout,
                pool=opts.connect_timeout,
            ),
            limits=httpx.Limits(
                max_connections=opts.max_connections,
                max_keepalive_connections=opts.max_connections,
            ),
            trust_env=False,  # a proxy from the environment must not capture upstream traffic
        )
        self._prober = HealthProber(
            self.pool, self._client, opts.probe_interval, opts.probe_timeout, {}
        )
        await self._prober.check(self.pool.replicas)
        self._prober.start()
        log.info(
            "upstreams probed",
            model=self.model_id,
            upstream_model=self.upstream_model,
            replicas=self.pool.status(),
        )
        if not self.pool.available:
            log.warning("no upstream replica is reachable yet", model=self.model_id)

    async def aclose(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None:
            await prober.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- description --------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            streaming=True,
            token_prompts=self.opts.token_prompts,
            chat_template=True,  # the upstream renders chat messages
            max_context=self.opts.max_context,
            logprobs=self.opts.logprobs,
            echo=self.opts.echo,
            suffix=self.opts.suffix,
            features=frozenset(
                name
                for name, on in (
                    ("response_format", self.opts.response_format),
                    ("tools", self.opts.tools),
                )
                if on
            ),
        )

    def info(self) -> ModelInfo:
        return ModelInfo(
            self.model_id,
            self.name,
            self.capabilities,
            {
                "upstream_model": self.upstream_model,
                "upstreams": [u.display for u in self.opts.upstreams],
            },
        )

    def stats(self) -> Mapping[str, Any]:
        return {"available": self.pool.available, "replicas": self.pool.status()}

    def health(self) -> Health:
        if self.pool.available:
            return Health()
        return Health("unavailable", "no upstream replica is healthy")

    # -- generation ---------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Try replicas until one starts answering (at most `max_retries` extra tries,
        and only for failures before any byte of the answer); then relay its stream."""
        client = self._client
        if client is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        opts = self.opts
        body = build_body(request, self.upstream_model, True, opts.stream_usage)
        path = "/chat/completions" if request.is_chat else "/completions"
        exchange = Exchange(self.limits)
        prompt = request.prompt
        echo = (prompt if isinstance(prompt, str) else "") if request.echo else None
        tried: set[Replica] = set()
        last_error: UpstreamError | None = None
        for _ in range(opts.max_retries + 1):
            replica = self.pool.pick(tried)
            if replica is None:
                break
            tried.add(replica)
            replica.outstanding += 1
            replica.requests += 1
            started = False
            try:
                response = await self._open(client, replica, path, body, request.request_id,
                                            exchange)
                try:
                    async for event in relay(response, request.is_chat, exchange, echo):
                        started = True
                        yield event
                finally:
                    await response.aclose()
                self.pool.succeeded(replica)
                return
            except UpstreamError as exc:
                if exc.status >= 500:
                    self.pool.failed(replica, str(exc))
                if started or not isinstance(exc, errors.RetryableError):
                    raise
                log.warning("upstream failed before answering; trying another replica",
                            upstream=replica.upstream.display, error=str(exc),
                            request_id=request.request_id)
                last_error = exc
            finally:
                replica.outstanding -= 1
        if last_error is not None:
            raise last_error
        raise UpstreamError(
            f"No healthy upstream server for model '{self.model_id}'; retry shortly.",
            503, "server_error", "no_healthy_upstream",
            retry_after=min(errors.RETRY_AFTER_RANGE[1], max(1.0, opts.cooldown)),
        )

    async def _open(
        self,
        client: httpx.AsyncClient,
        replica: Replica,
        path: str,
        body: dict[str, Any],
        request_id: str,
        exchange: Exchange,
    ) -> httpx.Response:
        """Send the request and read the status line and headers (within the exchange's
        bounds, however slowly they trickle in); a non-2xx is read (a prefix) and mapped."""
        headers = replica.headers
        if request_id:
            # not `x-request-id`: llama-cpp-python's server rejects any that is not a UUID
            headers = {**headers, "x-gateway-request-id": request_id}
        request = client.build_request("POST", replica.url + path, json=body, headers=headers)
        try:
            response = await exchange.wait(client.send(request, stream=True))
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, self.opts.chunk_timeout) from None
        if response.status_code < 400:
            return response
        try:
            content = await read_body(response, exchange, ERROR_BODY_BYTES, cut=True)
        except UpstreamError:  # too slow, or broken: the status says enough
            content = b""
        finally:
            await response.aclose()
        raise errors.from_response(
            response.status_code, content, response.headers, replica.upstream.display
        )
