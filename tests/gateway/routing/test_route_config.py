"""`[[routes]]` and `hidden`: every configuration mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigFileError, load_config
from gateway.routing import Experiment, RouteConfig, Shadow, Variant

MODELS = """
[[models]]
id = "local"
backend = "llama_cpp"
hidden = true
[[models]]
id = "remote"
backend = "openai_http"
hidden = true
[[models]]
id = "spare"
backend = "llama_cpp"
"""

GOOD = (
    MODELS
    + """
[[routes]]
id = "smol"
fallbacks = ["spare"]
[routes.experiment]
name = "local-vs-remote"
unit = "header:X-Session-Id"
salt = "2026-12"
variants = [
  { name = "control", model = "local", weight = 50 },
  { name = "treatment", model = "remote", weight = 50.5 },
]
[routes.shadow]
model = "spare"
sample = 0.25
max_concurrency = 2

[[routes]]
id = "alias"
model = "local"
fallbacks = ["remote"]
"""
)


def load(tmp_path: Path, text: str):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_config(path, env={})


def test_a_full_route_table_is_read(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    assert [m.hidden for m in config.models] == [True, True, False]
    smol, alias = config.routes
    assert smol == RouteConfig(
        "smol",
        None,
        Experiment(
            "local-vs-remote",
            "header:x-session-id",
            "2026-12",
            (Variant("control", "local", 50.0), Variant("treatment", "remote", 50.5)),
            True,
        ),
        ("spare",),
        Shadow("spare", 0.25, 2),
    )
    assert alias == RouteConfig("alias", "local", None, ("remote",))


def route(body: str) -> str:
    return MODELS + "[[routes]]\n" + body


EXPERIMENT = """id = "r"
[routes.experiment]
name = "e"
variants = [
  { name = "a", model = "local", weight = 1 },
  { name = "b", model = "remote", weight = 1 }]
"""


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            MODELS + "[[models]]\nid='x'\nbackend='b'\nhidden='yes'\n",
            "models[3].hidden",
            "true or false",
        ),
        (route('id = "r"\n'), "routes[0]", "exactly one of model"),
        (route('id = "r"\nmodel = "local"\nbogus = 1\n'), "routes[0].bogus", "unknown key"),
        (route('id = "local"\nmodel = "remote"\n'), "routes[0].id", "duplicate id 'local'"),
        (route('id = "r"\nmodel = "nope"\n'), "routes[0].model", "unknown model 'nope'"),
        (
            route('id = "r"\nmodel = "local"\nfallbacks = ["nope"]\n'),
            "routes[0].fallbacks[0]",
            "unknown model",
        ),
        (
            route('id = "r"\nmodel = "local"\nfallbacks = ["spare", "spare"]\n'),
            "routes[0].fallbacks",
            "twice",
        ),
        (
            route('id = "r"\nmodel = "local"\n[[routes]]\nid = "r"\nmodel = "remote"\n'),
            "routes[1].id",
            "duplicate id 'r' (already a route id)",
        ),
        (
            route(EXPERIMENT.replace('model = "remote"', 'model = "ghost"')),
            "routes[0].experiment.variants[1].model",
            "unknown model 'ghost'",
        ),
        (
            route(EXPERIMENT.replace("weight = 1 },", "weight = 0 },")),
            "routes[0].experiment.variants[0].weight",
            "positive",
        ),
        (
            route(EXPERIMENT.replace("weight = 1 }]", "weight = -3 }]")),
            "routes[0].experiment.variants[1].weight",
            "positive",
        ),
        (
            route(EXPERIMENT.replace('name = "b"', 'name = "a"')),
            "routes[0].experiment.variants[1].name",
            "duplicate variant",
        ),
        (
            route(EXPERIMENT.replace('name = "e"', 'name = "e"\nunit = "cookie"')),
            "routes[0].experiment.unit",
            "header:<name>",
        ),
        (
            route(EXPERIMENT.replace('name = "e"', 'name = "e"\nunit = "header:"')),
            "routes[0].experiment.unit",
            "header:<name>",
        ),
        (
            route(EXPERIMENT.replace('name = "e"', 'name = "e"\nsalt = 5')),
            "routes[0].experiment.salt",
            "string",
        ),
        (
            route(EXPERIMENT.replace('name = "e"', 'name = "e"\nallow_override = "no"')),
            "routes[0].experiment.allow_override",
            "true or false",
        ),
        (
            route('id = "r"\n[routes.experiment]\nname = "e"\nvariants = []\n'),
            "routes[0].experiment.variants",
            "non-empty",
        ),
        (
            route(EXPERIMENT + '[routes.shadow]\nmodel = "remote"\n'),
            "routes[0].shadow.model",
            "already serves this route",
        ),
        (
            route(EXPERIMENT + '[routes.shadow]\nmodel = "spare"\nsample = 0\n'),
            "routes[0].shadow.sample",
            "(0, 1]",
        ),
        (
            route(EXPERIMENT + '[routes.shadow]\nmodel = "spare"\nmax_concurrency = 0\n'),
            "routes[0].shadow.max_concurrency",
            "1 to 1024",
        ),
        (
            route('id = "a"\nmodel = "b"\n[[routes]]\nid = "b"\nmodel = "local"\n')
            + 'fallbacks = ["a"]\n',
            "routes[0]",
            "cycle: a -> b -> a",
        ),
        (
            route(EXPERIMENT + '[[routes]]\nid = "x"\nmodel = "r"\n'),
            "routes[1].model",
            "route with an experiment",
        ),
        ("routes = 3\n" + MODELS, "routes", "array of tables"),
        (MODELS + "[metrics]\nenabled = 1\n", "metrics.enabled", "true or false"),
        (route('id = "r"\nmodel = "local"\ndeadline = 0\n'), "routes[0].deadline", "seconds"),
    ],
)
def test_route_mistakes_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigFileError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert f": {key}: " in message, message
    assert problem in message, message


def test_an_alias_may_name_another_alias(tmp_path: Path) -> None:
    config = load(tmp_path, route('id = "a"\nmodel = "b"\n[[routes]]\nid = "b"\nmodel = "local"\n'))
    assert [r.id for r in config.routes] == ["a", "b"]
