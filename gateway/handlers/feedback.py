"""POST /v1/feedback {"request_id", "metric", "value"}: a user's verdict on a recorded
request (an accepted completion, a thumbs-up, a score), keyed by the `x-request-id`
the client got. Several metrics per request; a repeated (request, metric) overwrites.
Served only with a `[store]`; guarded by the API keys like every /v1 path."""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import APIError, invalid
from gateway.handlers.common import api_endpoint
from gateway.openai.params import parse_json_body
from gateway.records.model import FeedbackRecord
from gateway.records.writer import RecordWriter

log = structlog.get_logger("gateway.feedback")
METRIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # what the gateway hands out
FIELDS = ("request_id", "metric", "value")


def parse_feedback(body: dict[str, Any], now: float) -> FeedbackRecord:
    extra = sorted(set(body) - set(FIELDS))
    if extra:
        raise invalid(
            f"Unrecognized request argument supplied: {extra[0]} (expected {', '.join(FIELDS)}).",
            extra[0],
        )
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise invalid(
            "'request_id' must be the x-request-id header of a response "
            "(1-128 letters, digits and ._:-).",
            "request_id",
        )
    metric = body.get("metric")
    if not isinstance(metric, str) or not METRIC.match(metric):
        raise invalid(
            "'metric' must be a name of 1-64 letters, digits and _.:- (e.g. 'accepted').",
            "metric",
        )
    value = body.get("value")
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float) and math.isfinite(value) and abs(value) < 1e300:
        value = float(value)
    else:
        raise invalid("'value' must be true, false or a finite number.", "value")
    return FeedbackRecord(request_id, metric, value, now)


@api_endpoint
async def post_feedback(request: Request) -> Response:
    feedback = parse_feedback(parse_json_body(await request.body()), time.time())
    writer: RecordWriter = request.state.records
    try:
        known = await _put(writer, feedback)
        if not known:
            # the record may still wait in this gateway's queue: write it, then retry
            await writer.wait_idle(writer.settings.write_timeout_seconds)
            known = await _put(writer, feedback)
    except Exception as exc:
        log.warning("feedback not stored", error_type=type(exc).__name__)
        raise _unavailable() from None
    if not known:
        raise APIError(
            404,
            f"No recorded request has the id '{feedback.request_id}' (only requests of "
            "experiments are recorded, unless [store] record_all = true).",
            "invalid_request_error",
            "request_id",
            "request_not_found",
        )
    return JSONResponse(
        {
            "object": "feedback",
            "request_id": feedback.request_id,
            "metric": feedback.metric,
            "value": feedback.value,
        }
    )


async def _put(writer: RecordWriter, feedback: FeedbackRecord) -> bool:
    async with asyncio.timeout(writer.settings.write_timeout_seconds):
        return await writer.store.put_feedback(feedback)


def _unavailable() -> APIError:
    return APIError(
        503,
        "The record store is unavailable; the feedback was not stored. Retry later.",
        "server_error",
        None,
        "store_unavailable",
        {"retry-after": "5"},
    )
