"""What the gateway records about requests and feedback, and the store interface the
report (statistics, page, CLI) reads through. Frozen values: a record never changes once
written, except feedback, where a repeated (request, metric) overwrites."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Operation = Literal["completion", "chat"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request, built from its access record when it ends (streams included;
    cancelled ones with their tokens so far)."""

    time: float  # epoch seconds when the request started
    request_id: str
    route: str | None  # the route or model id the client asked for
    experiment: str | None
    variant: str | None
    served_by: str | None  # the model that served it, after any fallback
    fell_back: bool  # served by a fallback: excluded from comparisons
    unit_hash: str | None  # SHA-256 hex of the unit value, never the raw value
    unit_missing: bool  # the unit value was absent: assigned per request
    operation: str  # "completion" | "chat"
    stream: bool
    status: int  # 499 when the client left first
    error_type: str | None
    cancelled: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    total_ms: float
    tokens_per_second: float | None  # output tokens/s after the first token
    shadow: Mapping[str, Any] | None = None  # the shadow comparison, when one ran


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    request_id: str
    metric: str
    value: float | bool
    time: float  # epoch seconds when it was posted


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """An experiment as the store knows it: every variant seen and its request count."""

    name: str
    variants: tuple[str, ...]  # sorted
    counts: Mapping[str, int] = field(default_factory=dict)  # variant -> requests
    routes: tuple[str, ...] = ()  # the routes that recorded it
    first: float | None = None  # epoch of the oldest and newest record
    last: float | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class RecordStore(Protocol):
    """Where records and feedback go (gateway/records/sqlite.py, postgres.py). Every
    method may raise on an unreachable store; the writer counts such batches as dropped."""

    async def write(self, records: Sequence[RequestRecord]) -> None: ...

    async def attach_shadow(self, comparisons: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Sets the `shadow` of the records with these request ids (the comparison ends
        after the request); returns the ids it found."""
        ...

    async def put_feedback(self, fb: FeedbackRecord) -> bool:
        """False when no record has that request id."""
        ...

    async def experiments(self) -> list[ExperimentSummary]: ...

    async def records(self, experiment: str, since: float | None) -> list[RequestRecord]:
        """The experiment's records with time >= since, oldest first."""
        ...

    async def feedback(self, experiment: str, since: float | None) -> list[FeedbackRecord]:
        """Feedback on the experiment's requests with record time >= since."""
        ...

    async def aclose(self) -> None: ...
