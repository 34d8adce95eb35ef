"""Sticky assignment and plans: pure functions, checked with the statistics they
promise (a binomial interval, stability, agreement between fresh objects, and weight
changes that move only the share they must)."""

from __future__ import annotations

import math
import random

import pytest

from gateway.errors import APIError
from gateway.routing import Experiment, RouteConfig, Router, Shadow, Units, Variant
from gateway.routing.assign import api_key_unit, pick_variant, unit_point

USERS = [f"user-{i}" for i in range(400)]
# 99.9 % two-sided normal quantile, for the binomial interval of 400 fair coin flips
Z999 = 3.2905


def experiment(control: float = 50, treatment: float = 50, **kw: object) -> Experiment:
    variants = (Variant("control", "local", control), Variant("treatment", "remote", treatment))
    return Experiment("local-vs-remote", kw.pop("unit", "user"), "2026-12", variants, **kw)  # type: ignore[arg-type]


def router(exp: Experiment | None = None, **kw: object) -> Router:
    routes = [
        RouteConfig("smol", experiment=exp or experiment(), fallbacks=("spare",), **kw),  # type: ignore[arg-type]
        RouteConfig("alias", model="local", fallbacks=("remote",)),
    ]
    return Router(routes, ["local", "remote", "spare", "open"], hidden=["local", "remote"])


def variants_of(r: Router, users: list[str]) -> list[str | None]:
    return [r.plan("smol", Units(user=u)).variant for u in users]


def test_points_are_in_the_unit_interval_and_depend_on_every_part() -> None:
    p = unit_point("s", "e", "u")
    assert 0 <= p < 1
    assert p == unit_point("s", "e", "u")
    assert (
        len({p, unit_point("t", "e", "u"), unit_point("s", "f", "u"), unit_point("s", "e", "v")})
        == 4
    )
    # joining the parts with a separator would make these equal; the JSON array does not
    assert unit_point("a", "b\x00c", "d") != unit_point("a\x00b", "c", "d")


def test_pick_follows_the_cumulative_weights() -> None:
    variants = (Variant("a", "m", 1), Variant("b", "m", 3))
    assert [pick_variant(variants, x).name for x in (0.0, 0.2499, 0.25, 0.9999)] == [
        "a",
        "a",
        "b",
        "b",
    ]


def test_a_50_50_split_over_400_users_is_within_the_binomial_interval() -> None:
    counts = {"control": 0, "treatment": 0}
    for v in variants_of(router(), USERS):
        assert v is not None
        counts[v] += 1
    half_width = Z999 * math.sqrt(400 * 0.5 * 0.5)
    assert abs(counts["control"] - 200) <= half_width, counts
    assert counts["control"] + counts["treatment"] == 400


def test_a_user_gets_the_same_variant_every_time() -> None:
    r = router()
    for user in USERS[:10]:
        assert len({r.plan("smol", Units(user=user)).variant for _ in range(20)}) == 1


def test_two_fresh_routers_agree_on_every_user() -> None:
    # a second "process": new objects, a differently seeded random source
    other = Router(router().routes.values(), ["local", "remote", "spare"], rng=random.Random(7))
    assert variants_of(router(), USERS) == variants_of(other, USERS)


def test_growing_one_weight_moves_only_users_of_the_shrinking_variant() -> None:
    for bigger in ("control", "treatment"):
        grown = experiment(60, 50) if bigger == "control" else experiment(50, 60)
        before = variants_of(router(), USERS)
        after = variants_of(router(grown), USERS)
        moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
        assert moved, "a 10-point change over 400 users moves some of them"
        assert all(a == bigger for _, a in moved), moved
        assert len(moved) < 400 * 0.15


def test_the_salt_reshuffles() -> None:
    resalted = Experiment("local-vs-remote", "user", "2027-01", experiment().variants)
    before, after = variants_of(router(), USERS), variants_of(router(resalted), USERS)
    changed = sum(b != a for b, a in zip(before, after, strict=True))
    assert 100 < changed < 300


def test_plan_of_an_experiment_route() -> None:
    plan = router(shadow=Shadow("spare", 0.5, 2)).plan("smol", Units(user="alice"))
    assert plan.route == "smol" and plan.experiment == "local-vs-remote"
    assert plan.assignment == "hash"
    model = "local" if plan.variant == "control" else "remote"
    assert plan.candidates == (model, "spare")
    assert plan.shadow == Shadow("spare", 0.5, 2)
    assert plan.headers("spare") == {
        "x-gateway-route": "smol",
        "x-gateway-experiment": "local-vs-remote",
        "x-gateway-variant": plan.variant,
        "x-gateway-model": "spare",
    }


def test_a_request_without_its_unit_is_assigned_per_request_and_marked() -> None:
    r = router()
    plans = [r.plan("smol", Units()) for _ in range(200)]
    assert {p.assignment for p in plans} == {"unit_missing"}
    assert {p.variant for p in plans} == {"control", "treatment"}


@pytest.mark.parametrize(
    ("unit", "units", "sticky"),
    [
        ("api_key", Units(api_key="sk-1"), True),
        ("header:x-session-id", Units(headers={"x-session-id": "s1"}), True),
        ("request", Units(user="alice"), False),
    ],
)
def test_other_units(unit: str, units: Units, sticky: bool) -> None:
    r = router(experiment(unit=unit))
    plans = [r.plan("smol", units) for _ in range(60)]
    assert {p.assignment for p in plans} == {"hash" if sticky else "request"}
    assert (len({p.variant for p in plans}) == 1) is sticky


def test_the_api_key_unit_is_a_hash_of_the_key() -> None:
    assert api_key_unit("sk-1") != "sk-1" and len(api_key_unit("sk-1")) == 64
    exp = experiment(unit="api_key")
    point = unit_point(exp.salt, exp.name, api_key_unit("sk-1"))
    assert (
        router(exp).plan("smol", Units(api_key="sk-1")).variant
        == pick_variant(exp.variants, point).name
    )


def test_override_forces_a_variant() -> None:
    r = router()
    for name in ("control", "treatment"):
        plan = r.plan("smol", Units(user="alice"), override=name)
        assert (plan.variant, plan.assignment) == (name, "override")


@pytest.mark.parametrize(
    ("model", "override", "exp", "problem"),
    [
        ("smol", "nope", None, "'nope' is not a variant of route 'smol'"),
        ("smol", "control", experiment(allow_override=False), "allow_override = false"),
        ("alias", "control", None, "has no experiment"),
        ("open", "control", None, "not an experiment"),
    ],
)
def test_an_override_that_cannot_be_honoured_is_a_400(
    model: str, override: str, exp: Experiment | None, problem: str
) -> None:
    with pytest.raises(APIError) as err:
        router(exp).plan(model, Units(), override=override)
    assert err.value.status == 400
    assert err.value.param == "x-gateway-variant"
    assert problem in err.value.message


def test_aliases_plain_models_and_hidden_models() -> None:
    r = router()
    alias = r.plan("alias", Units())
    assert (alias.route, alias.variant, alias.candidates) == ("alias", None, ("local", "remote"))
    assert alias.headers("remote") == {"x-gateway-route": "alias", "x-gateway-model": "remote"}
    plain = r.plan("open", Units())
    assert (plain.route, plain.candidates, plain.headers("open")) == (None, ("open",), {})
    assert r.public_ids == ["spare", "open", "smol", "alias"]
    for name in ("local", "remote", "nothing"):
        with pytest.raises(APIError) as err:
            r.plan(name, Units())
        assert (err.value.status, err.value.code) == (404, "model_not_found")


def test_alias_chains_expand_in_order_once() -> None:
    routes = [
        RouteConfig("a", model="b", fallbacks=("m3", "m1")),
        RouteConfig("b", model="m1", fallbacks=("m2",)),
    ]
    r = Router(routes, ["m1", "m2", "m3"])
    assert r.plan("a", Units()).candidates == ("m1", "m2", "m3")
