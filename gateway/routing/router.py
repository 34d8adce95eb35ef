"""The routing layer between the handlers and the backends: for the `model` a client
asked for, which models to try in order, and under which route, experiment and
variant the request is recorded. Backends know nothing of it."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.errors import invalid, model_not_found
from gateway.routing.assign import api_key_unit, pick_variant, unit_hash, unit_point
from gateway.routing.config import RouteConfig, Shadow

OVERRIDE_HEADER = "x-gateway-variant"
Assignment = Literal["hash", "override", "unit_missing", "request"]


@dataclass(frozen=True, slots=True)
class Units:
    """What a request offers as assignment units. `api_key` is the raw key (hashed
    before use); `headers` are lower-case names."""

    user: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """How to serve one request: `candidates` are model ids in the order to try (the
    assigned variant's model, then the fallbacks). `route` is None for a plain model."""

    asked: str
    candidates: tuple[str, ...]
    route: str | None = None
    experiment: str | None = None
    variant: str | None = None
    assignment: Assignment | None = None
    shadow: Shadow | None = None
    deadline: float = 600.0
    unit_hash: str | None = None  # SHA-256 hex of (salt, experiment, unit value): for records

    def headers(self, served_by: str) -> dict[str, str]:
        """The response headers of a routed request (none for a plain model)."""
        if self.route is None:
            return {}
        out = {"x-gateway-route": self.route, "x-gateway-model": served_by}
        if self.experiment is not None and self.variant is not None:
            out["x-gateway-experiment"] = self.experiment
            out["x-gateway-variant"] = self.variant
        return out


class Router:
    """Built once per app from the configuration. `rng` draws the points of requests
    without a unit value (tests pass a seeded one)."""

    def __init__(
        self,
        routes: Iterable[RouteConfig],
        model_ids: Iterable[str],
        hidden: Iterable[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.routes = {r.id: r for r in routes}
        self.model_ids = tuple(model_ids)
        self.hidden = frozenset(hidden)
        self._rng = rng or random.Random()

    @property
    def public_ids(self) -> list[str]:
        """What /v1/models lists: visible models, then routes."""
        return [m for m in self.model_ids if m not in self.hidden] + list(self.routes)

    def is_public(self, name: str) -> bool:
        return name in self.routes or (name in self.model_ids and name not in self.hidden)

    def first_model(self, name: str) -> str:
        """The model a route's traffic goes to first (its first variant's, or its
        alias target's), or `name` itself for a model."""
        route = self.routes.get(name)
        if route is None:
            return name
        if route.experiment is not None:
            return self.first_model(route.experiment.variants[0].model)
        assert route.model is not None
        return self.first_model(route.model)

    def serving_models(self, name: str) -> tuple[str, ...]:
        """Every model that may serve `name`: each variant's, then the fallbacks."""
        out: list[str] = []
        route = self.routes.get(name)
        if route is not None and route.experiment is not None:
            for variant in route.experiment.variants:
                self._expand(variant.model, out)
            for fallback in route.fallbacks:
                self._expand(fallback, out)
        else:
            self._expand(name, out)
        return tuple(out)

    def candidates(self, name: str) -> tuple[str, ...]:
        """The model ids behind a model or alias route, in order, each once."""
        out: list[str] = []
        self._expand(name, out)
        return tuple(out)

    def _expand(self, name: str, out: list[str]) -> None:
        route = self.routes.get(name)
        if route is None:
            if name not in out:
                out.append(name)
            return
        if route.model is not None:
            self._expand(route.model, out)
        for fallback in route.fallbacks:
            self._expand(fallback, out)

    def plan(self, model: str, units: Units, override: str | None = None) -> RoutePlan:
        """The plan for a request naming `model`. Unknown and hidden ids are 404s;
        an override naming no variant of the route is a 400 naming the header."""
        if not self.is_public(model):
            raise model_not_found(model)
        route = self.routes.get(model)
        if route is None:
            if override is not None:
                raise _override_error(f"model '{model}' is not an experiment")
            return RoutePlan(model, (model,))
        experiment = route.experiment
        if experiment is None:
            if override is not None:
                raise _override_error(f"route '{model}' has no experiment")
            return RoutePlan(
                model, self.candidates(model), route=model, shadow=route.shadow,
                deadline=route.deadline,
            )
        assignment: Assignment
        value = _unit_value(experiment.unit, units)
        if override is not None:
            if not experiment.allow_override:
                raise _override_error(
                    f"route '{model}' does not allow choosing a variant (allow_override = false)"
                )
            chosen = next((v for v in experiment.variants if v.name == override), None)
            if chosen is None:
                names = ", ".join(v.name for v in experiment.variants)
                raise _override_error(
                    f"'{override}' is not a variant of route '{model}' (variants: {names})"
                )
            assignment = "override"
        else:
            if value is None:
                point = self._rng.random()
                assignment = "request" if experiment.unit == "request" else "unit_missing"
            else:
                point = unit_point(experiment.salt, experiment.name, value)
                assignment = "hash"
            chosen = pick_variant(experiment.variants, point)
        out: list[str] = []
        self._expand(chosen.model, out)
        for fallback in route.fallbacks:
            self._expand(fallback, out)
        return RoutePlan(
            model,
            tuple(out),
            route=model,
            experiment=experiment.name,
            variant=chosen.name,
            assignment=assignment,
            shadow=route.shadow,
            deadline=route.deadline,
            unit_hash=None if value is None else unit_hash(experiment.salt, experiment.name, value),
        )


def _unit_value(unit: str, units: Units) -> str | None:
    if unit == "user":
        return units.user or None
    if unit == "api_key":
        return api_key_unit(units.api_key) if units.api_key else None
    if unit.startswith("header:"):
        return units.headers.get(unit[len("header:"):]) or None
    return None  # "request": a fresh point each time


def _override_error(problem: str) -> Exception:
    return invalid(f"Invalid '{OVERRIDE_HEADER}' header: {problem}.", OVERRIDE_HEADER)
