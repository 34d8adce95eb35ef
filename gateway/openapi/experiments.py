"""The experiment report's paths in the OpenAPI document (served only with a `[store]`)."""

from __future__ import annotations

from gateway.openapi.schemas import ERRORS, Schema, json_content

_NUMBER = {"type": ["number", "null"]}
INTERVAL: Schema = {
    "type": "object",
    "required": ["value", "low", "high"],
    "properties": {"value": _NUMBER, "low": _NUMBER, "high": _NUMBER},
}
_STATS: Schema = {
    "type": "object",
    "description": "n, and mean, p50, p95 each with a bootstrap interval",
    "required": ["n", "mean", "p50", "p95"],
    "properties": {"n": {"type": "integer"}, "mean": INTERVAL, "p50": INTERVAL, "p95": INTERVAL},
}
_RATE: Schema = {
    "type": "object",
    "description": "count of n, with a Wilson interval",
    "required": ["n", "count", "value", "low", "high"],
}
_DIFFERENCE: Schema = {
    "type": "object",
    "description": "treatment minus control with an interval; excludes_zero marks a "
    "difference; latency statistics also carry the ratio treatment / control",
    "required": ["value", "low", "high", "excludes_zero"],
}
VARIANT: Schema = {
    "type": "object",
    "required": ["name", "n", "enough_data", "metrics", "rates", "feedback"],
    "properties": {
        "name": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "weight": _NUMBER,
        "control": {"type": "boolean"},
        "n": {"type": "integer", "description": "compared requests"},
        "enough_data": {"type": "boolean", "description": "n >= [report] min_n"},
        "metrics": {
            "type": "object",
            "properties": {m: _STATS for m in ("ttft_ms", "total_ms", "tokens_per_second")},
        },
        "rates": {
            "type": "object",
            "properties": {"error_rate": _RATE, "cancel_rate": _RATE},
        },
        "feedback": {
            "type": "object",
            "description": "per metric: kind boolean (a rate, Wilson) or numeric (a mean, "
            "t interval)",
            "additionalProperties": {"type": "object"},
        },
    },
}
REPORT: Schema = {
    "type": "object",
    "required": [
        "object",
        "experiment",
        "control",
        "total",
        "compared",
        "excluded",
        "srm",
        "variants",
        "comparisons",
        "plots",
    ],
    "properties": {
        "object": {"const": "experiment.report"},
        "experiment": {"type": "string"},
        "route": {"type": ["string", "null"]},
        "since": _NUMBER,
        "generated_at": {"type": "number"},
        "control": {"type": "string"},
        "configured": {"type": "boolean"},
        "settings": {"type": "object"},
        "total": {"type": "integer"},
        "compared": {"type": "integer", "description": "without fell_back and unit_missing"},
        "excluded": {"type": "object", "description": "fell_back and unit_missing: count, share"},
        "srm": {
            "type": "object",
            "description": "sample-ratio mismatch: chi-square of the assignment counts "
            "against the weights, flagged below p = threshold (0.001)",
            "required": ["counts", "p_value", "flagged"],
        },
        "variants": {"type": "array", "items": VARIANT},
        "comparisons": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["variant", "against", "enough_data", "metrics"],
                "properties": {
                    "variant": {"type": "string"},
                    "against": {"type": "string"},
                    "enough_data": {"type": "boolean"},
                    "metrics": {"type": "object", "additionalProperties": _DIFFERENCE},
                    "feedback": {"type": "object", "additionalProperties": _DIFFERENCE},
                },
            },
        },
        "plots": {
            "type": "object",
            "description": "latency histograms per variant and assignments over time",
        },
    },
}
EXPERIMENTS: Schema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "configured", "total", "variants"],
                "properties": {
                    "name": {"type": "string"},
                    "route": {"type": ["string", "null"]},
                    "configured": {"type": "boolean"},
                    "total": {"type": "integer"},
                    "first": _NUMBER,
                    "last": _NUMBER,
                    "variants": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "count"],
                            "properties": {
                                "name": {"type": "string"},
                                "model": {"type": ["string", "null"]},
                                "weight": _NUMBER,
                                "count": {"type": "integer"},
                            },
                        },
                    },
                },
            },
        },
    },
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_SINCE = {
    "name": "since",
    "in": "query",
    "required": False,
    "description": "only requests from then on: epoch seconds or ISO 8601 (UTC without an "
    "offset); 400 naming since when malformed",
    "schema": {"type": "string"},
}
_HTML = {"text/html": {"schema": {"type": "string"}}}

PATHS: dict[str, Schema] = {
    "/v1/experiments": {
        "get": {
            "summary": "Experiments of the config or the store: variants and request counts",
            "responses": {"200": json_content(EXPERIMENTS, "OK"), **ERRORS},
            "security": [{"bearer": []}, {}],
        }
    },
    "/v1/experiments/{name}/report": {
        "get": {
            "summary": "An experiment's report: per variant latency, throughput, error and "
            "cancel rates and feedback with intervals, differences against control, the "
            "sample-ratio check (404 experiment_not_found)",
            "parameters": [_NAME, _SINCE],
            "responses": {"200": json_content(REPORT, "OK"), **ERRORS},
            "security": [{"bearer": []}, {}],
        }
    },
    "/experiments/{name}": {
        "get": {
            "summary": "The report as a web page (tables and SVG plots); it fetches the JSON "
            "report with the API key as a bearer header, kept in the tab's sessionStorage",
            "parameters": [_NAME, _SINCE],
            "responses": {"200": {"description": "The page", "content": _HTML}, **ERRORS},
        }
    },
    "/experiments/assets/{file}": {
        "get": {
            "summary": "The page's script and style (report.js, report.css)",
            "parameters": [{**_NAME, "name": "file"}],
            "responses": {
                "200": {
                    "description": "The asset",
                    "content": {
                        "text/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                    },
                },
                **ERRORS,
            },
        }
    },
}
