"""The `[[routes]]` tables: a public id that clients send as `model`, served by an
experiment's variants (or one model), with fallbacks and an optional shadow.

Route ids and model ids share one namespace. A route names models, or alias routes
(routes without an experiment), which are expanded to their own candidates; every
problem is a configuration error naming the key (`fail(key, problem)`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Fail = Callable[[str, str], Exception]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}$")
HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
ROUTE_KEYS = ("id", "model", "fallbacks", "experiment", "shadow", "deadline")
EXPERIMENT_KEYS = ("name", "unit", "salt", "variants", "allow_override")
SHADOW_KEYS = ("model", "sample", "max_concurrency")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    model: str
    weight: float


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    unit: str  # "user" | "api_key" | "request" | "header:<lower-case name>"
    salt: str
    variants: tuple[Variant, ...]
    allow_override: bool = True

    @property
    def unit_header(self) -> str | None:
        return self.unit.partition(":")[2] if self.unit.startswith("header:") else None


@dataclass(frozen=True, slots=True)
class Shadow:
    model: str
    sample: float = 1.0  # fraction of requests copied
    max_concurrency: int = 1  # copies running at once; more are dropped, never queued


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """`model` for an alias, `experiment` otherwise (exactly one of them)."""

    id: str
    model: str | None = None
    experiment: Experiment | None = None
    fallbacks: tuple[str, ...] = ()
    shadow: Shadow | None = None
    # seconds for trying every candidate until one sends its first event, shared by
    # all of them (a backend's own retries included), so fallbacks never multiply waits
    deadline: float = 600.0


def parse_routes(raw: Any, model_ids: Sequence[str], fail: Fail) -> tuple[RouteConfig, ...]:
    """Read `[[routes]]` and check it against the configured model ids."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise fail("routes", "must be an array of tables ([[routes]])")
    routes: list[RouteConfig] = []
    seen = set(model_ids)
    for i, entry in enumerate(raw):
        key = f"routes[{i}]"
        route = _parse_route(entry, key, fail)
        if route.id in seen:
            what = "model" if route.id in model_ids else "route"
            raise fail(f"{key}.id", f"duplicate id {route.id!r} (already a {what} id)")
        seen.add(route.id)
        routes.append(route)
    _check_references(routes, set(model_ids), fail)
    return tuple(routes)


def _parse_route(entry: Any, key: str, fail: Fail) -> RouteConfig:
    if not isinstance(entry, dict):
        raise fail(key, "must be a table")
    extra = sorted(set(entry) - set(ROUTE_KEYS))
    if extra:
        raise fail(f"{key}.{extra[0]}", f"unknown key (expected {', '.join(ROUTE_KEYS)})")
    route_id = _name(entry.get("id"), f"{key}.id", fail)
    has_model, has_experiment = "model" in entry, "experiment" in entry
    if has_model == has_experiment:
        raise fail(key, "set exactly one of model (an alias) or [routes.experiment]")
    model = _name(entry["model"], f"{key}.model", fail) if has_model else None
    experiment = None
    if has_experiment:
        experiment = _experiment(entry["experiment"], f"{key}.experiment", fail)
    fallbacks_raw = entry.get("fallbacks", [])
    if not isinstance(fallbacks_raw, list):
        raise fail(f"{key}.fallbacks", "must be a list of model ids")
    fallbacks = tuple(_name(f, f"{key}.fallbacks[{j}]", fail) for j, f in enumerate(fallbacks_raw))
    if len(set(fallbacks)) != len(fallbacks):
        raise fail(f"{key}.fallbacks", "lists the same model twice")
    shadow = _shadow(entry["shadow"], f"{key}.shadow", fail) if "shadow" in entry else None
    deadline = entry.get("deadline", 600.0)
    if (
        not isinstance(deadline, int | float)
        or isinstance(deadline, bool)
        or not 0 < deadline <= 86400
    ):
        raise fail(f"{key}.deadline", "must be a number of seconds in (0, 86400]")
    return RouteConfig(route_id, model, experiment, fallbacks, shadow, float(deadline))


def _experiment(raw: Any, key: str, fail: Fail) -> Experiment:
    if not isinstance(raw, dict):
        raise fail(key, "must be a table")
    extra = sorted(set(raw) - set(EXPERIMENT_KEYS))
    if extra:
        raise fail(f"{key}.{extra[0]}", f"unknown key (expected {', '.join(EXPERIMENT_KEYS)})")
    name = _name(raw.get("name"), f"{key}.name", fail)
    unit = raw.get("unit", "user")
    if not isinstance(unit, str) or not _valid_unit(unit):
        raise fail(f"{key}.unit", 'must be "user", "api_key", "request" or "header:<name>"')
    if unit.startswith("header:"):
        unit = "header:" + unit[len("header:"):].lower()
    salt = raw.get("salt", "")
    if not isinstance(salt, str):
        raise fail(f"{key}.salt", "must be a string")
    allow = raw.get("allow_override", True)
    if not isinstance(allow, bool):
        raise fail(f"{key}.allow_override", "must be true or false")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or not variants_raw:
        raise fail(f"{key}.variants", "must be a non-empty list of {name, model, weight}")
    variants: list[Variant] = []
    for j, v in enumerate(variants_raw):
        where = f"{key}.variants[{j}]"
        if not isinstance(v, dict):
            raise fail(where, "must be a table {name, model, weight}")
        extra = sorted(set(v) - {"name", "model", "weight"})
        if extra:
            raise fail(f"{where}.{extra[0]}", "unknown key (expected name, model, weight)")
        vname = _name(v.get("name"), f"{where}.name", fail)
        if any(x.name == vname for x in variants):
            raise fail(f"{where}.name", f"duplicate variant name {vname!r}")
        model = _name(v.get("model"), f"{where}.model", fail)
        weight = v.get("weight", 1)
        if (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise fail(f"{where}.weight", "must be a positive number")
        variants.append(Variant(vname, model, float(weight)))
    return Experiment(name, unit, salt, tuple(variants), allow)


def _valid_unit(unit: str) -> bool:
    if unit in ("user", "api_key", "request"):
        return True
    return unit.startswith("header:") and bool(HEADER_NAME.match(unit[7:].lower()))


def _shadow(raw: Any, key: str, fail: Fail) -> Shadow:
    if not isinstance(raw, dict):
        raise fail(key, "must be a table")
    extra = sorted(set(raw) - set(SHADOW_KEYS))
    if extra:
        raise fail(f"{key}.{extra[0]}", f"unknown key (expected {', '.join(SHADOW_KEYS)})")
    model = _name(raw.get("model"), f"{key}.model", fail)
    sample = raw.get("sample", 1.0)
    if not isinstance(sample, int | float) or isinstance(sample, bool) or not 0 < sample <= 1:
        raise fail(f"{key}.sample", "must be a fraction in (0, 1]")
    limit = raw.get("max_concurrency", 1)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1024:
        raise fail(f"{key}.max_concurrency", "must be an integer from 1 to 1024")
    return Shadow(model, float(sample), limit)


def _name(value: Any, key: str, fail: Fail) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise fail(key, "must be a name of letters, digits and ._:/@+-")
    return value


def _check_references(routes: list[RouteConfig], models: set[str], fail: Fail) -> None:
    """Every name is a model or an alias route; no alias chain loops; a shadow is a
    model that no variant already serves."""
    by_id = {r.id: r for r in routes}

    def check(name: str, key: str) -> None:
        if name in models:
            return
        target = by_id.get(name)
        if target is None:
            raise fail(key, f"unknown model {name!r} (not a [[models]] id or a route id)")
        if target.experiment is not None:
            raise fail(key, f"{name!r} is a route with an experiment; name a model or an alias")

    for i, route in enumerate(routes):
        key = f"routes[{i}]"
        if route.model is not None:
            check(route.model, f"{key}.model")
        if route.experiment is not None:
            for j, v in enumerate(route.experiment.variants):
                check(v.model, f"{key}.experiment.variants[{j}].model")
        for j, f in enumerate(route.fallbacks):
            check(f, f"{key}.fallbacks[{j}]")
        if route.shadow is not None:
            shadow = route.shadow.model
            if shadow not in models:
                raise fail(f"{key}.shadow.model", f"{shadow!r} is not a [[models]] id")
            primaries = (
                {v.model for v in route.experiment.variants}
                if route.experiment is not None
                else {route.model}
            )
            if shadow in primaries:
                raise fail(
                    f"{key}.shadow.model",
                    f"{shadow!r} already serves this route: a shadow must be another model",
                )
    for i, route in enumerate(routes):
        _no_cycle(route, by_id, f"routes[{i}]", fail)


def _no_cycle(route: RouteConfig, by_id: Mapping[str, RouteConfig], key: str, fail: Fail) -> None:
    def visit(name: str, path: tuple[str, ...]) -> None:
        target = by_id.get(name)
        if target is None:
            return
        if name in path:
            raise fail(key, "routes refer to each other in a cycle: " + " -> ".join((*path, name)))
        for nxt in (*((target.model,) if target.model else ()), *target.fallbacks):
            visit(nxt, (*path, name))

    visit(route.id, ())
