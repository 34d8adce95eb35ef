"""The routing half of serving a call: ask the router for a plan, then open the
call on its candidates in order until one sends its first event. A candidate that
fails before that (unreachable, 5xx, 503 not ready, 429 overloaded, a capability
this request needs) hands over to the next, all within the route's one deadline;
nothing falls back after the first byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Protocol

import structlog
from starlette.requests import Request

from backends.base import Backend, Capabilities, GenerationRequest
from backends.errors import BackendError, InvalidRequest, Overloaded, UpstreamError
from gateway.errors import APIError, to_api_error
from gateway.generation import (
    ChoiceStream,
    ClientDisconnected,
    Tally,
    open_choices,
    unless_disconnected,
)
from gateway.middleware import AccessRecord
from gateway.registry import ModelRegistry
from gateway.routing import OVERRIDE_HEADER, RoutePlan, Router, Units
from gateway.routing.shadow import PrimaryTap, ShadowRunner

log = structlog.get_logger("gateway.routing")


class RoutedCall(Protocol):
    model: str
    user: str | None

    def check(self, caps: Capabilities) -> None: ...
    def requests(self, request_id: str) -> list[GenerationRequest]: ...


@dataclass
class Opened:
    served_by: str
    backend: Backend
    streams: list[ChoiceStream]


def request_units(request: Request, call: RoutedCall) -> Units:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return Units(user=call.user, api_key=key, headers=request.headers)


def plan_call(request: Request, call: RoutedCall, record: AccessRecord) -> RoutePlan:
    router: Router = request.state.router
    override = request.headers.get(OVERRIDE_HEADER)
    plan = router.plan(call.model, request_units(request, call), override)
    record.route, record.experiment = plan.route, plan.experiment
    record.variant, record.assignment = plan.variant, plan.assignment
    record.unit_hash = plan.unit_hash
    return plan


def may_fall_back(exc: BaseException, checking: bool) -> bool:
    """Failures that say "not this model, not now" rather than "not this request"."""
    if isinstance(exc, APIError):
        return exc.status in (429, 503) or exc.status >= 500 or (checking and exc.status == 400)
    if isinstance(exc, UpstreamError):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, InvalidRequest):
        return checking  # a capability check; the backend's own 400s are the request's
    return True  # Overloaded, a BackendError, or an unexpected failure of that backend


async def open_plan(
    request: Request,
    plan: RoutePlan,
    call: RoutedCall,
    models: ModelRegistry,
    tally: Tally,
    record: AccessRecord,
) -> Opened:
    """The first candidate that starts every choice of the call. If none does, the
    error of the assigned candidate (the first) is raised: a request whose features no
    candidate supports gets the 400 it got before routing existed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.deadline
    first_error: BaseException | None = None
    for position, model_id in enumerate(plan.candidates):
        last = position == len(plan.candidates) - 1
        checking = True
        try:
            backend = models.get(model_id)
            if not last and backend.health().state != "ready":
                raise APIError(503, f"The model '{model_id}' is unavailable.", "server_error")
            call.check(backend.capabilities)
            checking = False
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _deadline_passed(plan)
            try:
                async with asyncio.timeout(remaining):
                    streams = await _open(request, backend, call, tally)
            except TimeoutError:
                raise _deadline_passed(plan) from None
        except ClientDisconnected:
            raise
        except Exception as exc:
            if first_error is None:
                first_error = exc
            if last or not may_fall_back(exc, checking) or loop.time() >= deadline:
                if first_error is exc:
                    raise
                raise first_error from exc
            error = to_api_error(exc)
            log.warning(
                "candidate failed before its first event; trying the next",
                route=plan.route,
                model=model_id,
                status=error.status,
                error=error.code or error.type,
                exc_info=exc if error.status >= 500 and not isinstance(exc, APIError) else None,
            )
            why = f"{model_id}:{error.code or error.type}"
            tried = record.fallback_errors
            record.fallback_errors = f"{tried},{why}" if tried else why
            continue
        if position > 0:
            record.fell_back = True
        record.served_by = model_id
        admission = tally.admission
        waits = [w for w in (admission.queue_seconds() if admission else []) if w is not None]
        if waits:  # every sequence has sent its first event: each was given a slot
            record.queue_ms = round(max(waits) * 1000, 1)
        return Opened(model_id, backend, streams)
    raise AssertionError("a plan has at least one candidate")


async def _open(
    request: Request, backend: Backend, call: RoutedCall, tally: Tally
) -> list[ChoiceStream]:
    return await unless_disconnected(
        request.receive, open_choices(backend, call.requests(request.state.request_id), tally)
    )


def _deadline_passed(plan: RoutePlan) -> APIError:
    return APIError(
        504,
        f"No model of '{plan.asked}' answered within {plan.deadline:g} seconds.",
        "server_error",
        None,
        "timeout",
    )


def with_route_headers(exc: BaseException, headers: dict[str, str]) -> BaseException:
    """An error of a routed request carries the route's headers too (errors the
    gateway knows; an unexpected one stays as it is, to be logged with its cause)."""
    if not headers or not isinstance(exc, APIError | InvalidRequest | Overloaded | BackendError):
        return exc
    error = to_api_error(exc)
    return replace(error, headers={**(error.headers or {}), **headers})


def start_shadow(
    request: Request, plan: RoutePlan, call: RoutedCall, models: ModelRegistry
) -> PrimaryTap | None:
    """A sampled copy of this call to the route's shadow model, run by the app."""
    shadow = plan.shadow
    if shadow is None or plan.route is None:
        return None

    def backend() -> Backend:
        found = models.get(shadow.model)
        call.check(found.capabilities)
        return found

    runner: ShadowRunner = request.state.shadows
    requests = call.requests(f"{request.state.request_id}-shadow")
    return runner.start(plan.route, shadow, backend, requests, plan.deadline)
