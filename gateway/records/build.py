"""A `RequestRecord` from a finished request's access record (gateway/middleware.py),
for the requests the store keeps: those of a route with an experiment, or every
generation request with `[store] record_all = true`."""

from __future__ import annotations

from typing import Protocol

from gateway.records.model import RequestRecord


class Access(Protocol):
    """What the record reads of the access record."""

    model: str | None
    stream: bool | None
    operation: str | None
    route: str | None
    experiment: str | None
    variant: str | None
    assignment: str | None
    served_by: str | None
    fell_back: bool | None
    unit_hash: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    error: str | None
    cancelled: bool | None


def build_record(
    access: Access,
    *,
    request_id: str,
    status: int,
    started_at: float,
    seconds: float,
    record_all: bool,
) -> RequestRecord | None:
    """None for what is not recorded (not a generation request; outside experiments
    unless `record_all`)."""
    if access.operation is None or access.model is None:
        return None
    if access.experiment is None and not record_all:
        return None
    total_ms = seconds * 1000
    rate = None
    generated = access.completion_tokens or 0
    if access.ttft_ms is not None and generated > 1 and total_ms > access.ttft_ms:
        rate = (generated - 1) / ((total_ms - access.ttft_ms) / 1000)
    return RequestRecord(
        time=started_at,
        request_id=request_id,
        route=access.route or access.model,
        experiment=access.experiment,
        variant=access.variant,
        served_by=access.served_by,
        fell_back=bool(access.fell_back),
        unit_hash=access.unit_hash,
        unit_missing=access.assignment == "unit_missing",
        operation=access.operation,
        stream=bool(access.stream),
        status=status,
        error_type=access.error,
        cancelled=bool(access.cancelled),
        prompt_tokens=access.prompt_tokens,
        completion_tokens=access.completion_tokens,
        ttft_ms=access.ttft_ms,
        total_ms=round(total_ms, 3),
        tokens_per_second=rate,
    )
