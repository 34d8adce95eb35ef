"""`POST /v1/feedback` in the OpenAPI document (served only with a `[store]`)."""

from __future__ import annotations

from gateway.openapi.schemas import ERRORS, Schema, json_content

_VALUE: Schema = {
    "anyOf": [{"type": "boolean"}, {"type": "number"}],
    "description": "A verdict (true/false: accepted, thumbs-up) or a finite number (a score).",
}

FEEDBACK_REQUEST: Schema = {
    "type": "object",
    "required": ["request_id", "metric", "value"],
    "additionalProperties": False,
    "properties": {
        "request_id": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9._:-]{1,128}$",
            "description": "The x-request-id header of the response it is about.",
        },
        "metric": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
            "description": "The metric's name; posting the same (request, metric) again "
            "overwrites.",
        },
        "value": _VALUE,
    },
}

FEEDBACK_RESPONSE: Schema = {
    "type": "object",
    "required": ["object", "request_id", "metric", "value"],
    "properties": {
        "object": {"const": "feedback"},
        "request_id": {"type": "string"},
        "metric": {"type": "string"},
        "value": _VALUE,
    },
}

PATHS: dict[str, Schema] = {
    "/v1/feedback": {
        "post": {
            "summary": "Feedback on a recorded request (404 request_not_found for an id no "
            "record has; 503 store_unavailable when the store is down)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": FEEDBACK_REQUEST}},
            },
            "responses": {"200": json_content(FEEDBACK_RESPONSE, "Stored"), **ERRORS},
            "security": [{"bearer": []}, {}],
        }
    },
}
