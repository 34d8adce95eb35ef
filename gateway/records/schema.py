"""The record tables, shared by the SQLite and PostgreSQL stores: the columns in order,
and how a `RequestRecord` becomes a row and back. Migrations are numbered; a store
applies those above the version its `schema_version` table holds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.records.model import FeedbackRecord, RequestRecord

COLUMNS = (
    "time", "request_id", "route", "experiment", "variant", "served_by", "fell_back",
    "unit_hash", "unit_missing", "operation", "stream", "status", "error_type", "cancelled",
    "prompt_tokens", "completion_tokens", "ttft_ms", "total_ms", "tokens_per_second", "shadow",
)  # fmt: skip


def migrations(real: str, text: str, serial: str) -> list[list[str]]:
    """Version 1, in the dialect's names for a float, a text and an id column."""
    return [
        [
            f"""CREATE TABLE IF NOT EXISTS requests (
                id {serial},
                time {real} NOT NULL, request_id {text} NOT NULL, route {text},
                experiment {text}, variant {text}, served_by {text},
                fell_back BOOLEAN NOT NULL, unit_hash {text}, unit_missing BOOLEAN NOT NULL,
                operation {text} NOT NULL, stream BOOLEAN NOT NULL, status INTEGER NOT NULL,
                error_type {text}, cancelled BOOLEAN NOT NULL, prompt_tokens INTEGER,
                completion_tokens INTEGER, ttft_ms {real}, total_ms {real} NOT NULL,
                tokens_per_second {real}, shadow {text})""",
            "CREATE INDEX IF NOT EXISTS requests_experiment_time ON requests (experiment, time)",
            "CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id)",
            "CREATE INDEX IF NOT EXISTS requests_time ON requests (time)",
            f"""CREATE TABLE IF NOT EXISTS feedback (
                request_id {text} NOT NULL, metric {text} NOT NULL,
                value {real} NOT NULL, is_bool BOOLEAN NOT NULL, time {real} NOT NULL,
                PRIMARY KEY (request_id, metric))""",
            "CREATE INDEX IF NOT EXISTS feedback_time ON feedback (time)",
        ],
    ]


def to_row(r: RequestRecord) -> tuple[Any, ...]:
    shadow = json.dumps(r.shadow, ensure_ascii=True) if r.shadow is not None else None
    return (
        r.time, r.request_id, r.route, r.experiment, r.variant, r.served_by, r.fell_back,
        r.unit_hash, r.unit_missing, r.operation, r.stream, r.status, r.error_type, r.cancelled,
        r.prompt_tokens, r.completion_tokens, r.ttft_ms, r.total_ms, r.tokens_per_second, shadow,
    )  # fmt: skip


def from_row(row: Sequence[Any]) -> RequestRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    for key in ("fell_back", "unit_missing", "stream", "cancelled"):
        values[key] = bool(values[key])
    values["shadow"] = json.loads(values["shadow"]) if values["shadow"] else None
    return RequestRecord(**values)


def feedback_from_row(row: Sequence[Any]) -> FeedbackRecord:
    request_id, metric, value, is_bool, time = row
    return FeedbackRecord(request_id, metric, bool(value) if is_bool else float(value), time)
