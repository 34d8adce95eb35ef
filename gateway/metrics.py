"""Prometheus metrics, one registry per app (never prometheus-client's global one).

Names follow the OpenTelemetry GenAI semantic conventions in Prometheus spelling
(`gen_ai.server.time_to_first_token` -> `gen_ai_server_time_to_first_token_seconds`).
Labels are what the client asked for (`model`: a route or model id), the experiment's
`variant` ("" outside experiments), the model that served it (`served_by`), the
`operation` (completion / chat, or infill / generate from the editors' dialects) and
`stream`; never a user, key or session value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

CALL_LABELS = ("model", "variant", "served_by", "operation", "stream")
# CPU prefill of a long prompt takes minutes: the buckets reach 600 s.
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 600.0,
)
PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TOKEN_BUCKETS = tuple(float(4**i) for i in range(12))  # 1 .. 4,194,304
CONTENT_TYPE = CONTENT_TYPE_LATEST
# An upstream's error codes reach `error_type`: past this many distinct values, "other",
# so that no upstream can grow the number of series without bound.
MAX_ERROR_TYPES = 64


@dataclass(frozen=True, slots=True)
class BackendSample:
    """One model's backend as the scrape sees it."""

    model: str
    up: bool
    slots_busy: int | None = None
    queue_depth: int | None = None


class _BackendCollector(Collector):
    """Reads the backends' state at scrape time, so it is never stale."""

    def __init__(self, sample: Callable[[], Iterable[BackendSample]]) -> None:
        self._sample = sample

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "gateway_backend_up", "1 when the model can serve now", labels=["model"]
        )
        busy = GaugeMetricFamily(
            "gateway_backend_slots_busy", "sequences being generated", labels=["model"]
        )
        queue = GaugeMetricFamily(
            "gateway_backend_queue_depth", "sequences waiting for a slot", labels=["model"]
        )
        for s in self._sample():
            up.add_metric([s.model], 1.0 if s.up else 0.0)
            if s.slots_busy is not None:
                busy.add_metric([s.model], float(s.slots_busy))
            if s.queue_depth is not None:
                queue.add_metric([s.model], float(s.queue_depth))
        return [up, busy, queue]


class GatewayMetrics:
    def __init__(self, backends: Callable[[], Iterable[BackendSample]] | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self._error_types: set[str] = set()
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first generated token",
            CALL_LABELS, registry=r, buckets=LATENCY_BUCKETS,
        )
        self.time_per_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per generated token after the first",
            CALL_LABELS, registry=r, buckets=PER_TOKEN_BUCKETS,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request to its last byte",
            CALL_LABELS, registry=r, buckets=LATENCY_BUCKETS,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request, by type (input, output)",
            (*CALL_LABELS, "token_type"), registry=r, buckets=TOKEN_BUCKETS,
        )
        self.requests = Counter(
            "gateway_requests",
            "Generation requests by outcome",
            (*CALL_LABELS, "status_class", "error_type"), registry=r,
        )
        self.cancelled = Counter(
            "gateway_requests_cancelled",
            "Generation requests the client left before their end",
            CALL_LABELS, registry=r,
        )
        self.queue_wait = Histogram(
            "gateway_queue_wait_seconds",
            "Time a request's sequences waited for a slot of their engine (the longest)",
            CALL_LABELS, registry=r, buckets=LATENCY_BUCKETS,
        )
        self.inflight = Gauge(
            "gateway_inflight_requests", "Generation requests being served", ("model",), registry=r
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "Requests served by a later candidate because an earlier one failed first",
            ("model", "from", "to"), registry=r,
        )
        self.shadow = Counter(
            "gateway_shadow",
            "Shadow copies by result (ok, dropped, error, mismatch)",
            ("model", "shadow", "result"), registry=r,
        )
        self.shadow_duration = Histogram(
            "gateway_shadow_request_duration_seconds",
            "Duration of the primary and of its shadow copy, for comparison",
            ("model", "shadow", "role"), registry=r, buckets=LATENCY_BUCKETS,
        )
        self.assignments = Counter(
            "gateway_experiment_assignments",
            "Requests assigned to each variant, and how (hash, override, unit_missing, request)",
            ("experiment", "variant", "assignment"), registry=r,
        )
        if backends is not None:
            r.register(_BackendCollector(backends))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def started(self, model: str) -> None:
        """A generation request began (the serving path calls this once it has set
        the record's `operation`; `observe` ends it)."""
        self.inflight.labels(model).inc()

    def _bounded(self, error_type: str) -> str:
        if error_type not in self._error_types:
            if len(self._error_types) >= MAX_ERROR_TYPES:
                return "other"
            self._error_types.add(error_type)
        return error_type

    def assigned(self, experiment: str, variant: str, assignment: str) -> None:
        self.assignments.labels(experiment, variant, assignment).inc()

    def observe(self, record: RequestRecord, status: int, seconds: float) -> None:
        """Count one finished request from its access record: only generation
        requests (those with an `operation`), errors and cancelled ones included, with
        the tokens they had consumed when they ended."""
        if record.operation is None or record.model is None:
            return
        self.inflight.labels(record.model).dec()
        labels = (
            record.model,
            record.variant or "",
            record.served_by or "",
            record.operation,
            "true" if record.stream else "false",
        )
        error_type = self._bounded("cancelled" if record.cancelled else (record.error or ""))
        self.requests.labels(*labels, f"{status // 100}xx", error_type).inc()
        if record.cancelled:
            self.cancelled.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)
        if record.queue_ms is not None:
            self.queue_wait.labels(*labels).observe(record.queue_ms / 1000)
        if record.prompt_tokens is not None:
            self.tokens.labels(*labels, "input").observe(record.prompt_tokens)
        if record.completion_tokens is not None:
            self.tokens.labels(*labels, "output").observe(record.completion_tokens)
        if record.ttft_ms is not None:
            ttft = record.ttft_ms / 1000
            self.ttft.labels(*labels).observe(ttft)
            generated = record.completion_tokens or 0
            if generated > 1 and seconds > ttft:
                self.time_per_token.labels(*labels).observe((seconds - ttft) / (generated - 1))
        if record.fell_back and record.fallback_errors and record.served_by:
            first = record.fallback_errors.split(",", 1)[0].rsplit(":", 1)[0]
            self.fallbacks.labels(record.model, first, record.served_by).inc()


class RequestRecord(Protocol):
    """What `observe` reads of a request's access record (gateway.middleware)."""

    model: str | None
    stream: bool | None
    operation: str | None
    variant: str | None
    served_by: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    queue_ms: float | None
    error: str | None
    cancelled: bool | None
    assignment: str | None
    experiment: str | None
    fell_back: bool | None
    fallback_errors: str | None
