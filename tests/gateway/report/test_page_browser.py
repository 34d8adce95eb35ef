"""The experiment page in a real headless browser: Playwright for Python driving Debian's
chromium (installed by `.ci/dev.py test`, never by `playwright install`) against a
gateway on a loopback socket whose SQLite store holds seeded records. With API keys
configured the page asks for the key, keeps it in sessionStorage and sends it as a
bearer header (never in a URL); it shows one row per variant with the JSON report's
numbers, draws non-empty SVG plots, and logs no console error (a CSP violation is one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.config import ServerSettings
from gateway.records import FeedbackRecord
from gateway.records.config import StoreSettings
from gateway.records.sqlite import SQLiteStore
from tests.gateway.records.support import record, stored_app
from tests.gateway.routing.support import ab_route
from tests.support.inprocess import ScriptedBackend, ThreadedServer

CHROMIUM = Path("/usr/bin/chromium")
EXP = "local-vs-remote"
KEY = "sk-page-test"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is missing: `python3 .ci/dev.py test` installs it (as root)",
)


async def seed(path: Path) -> None:
    rng = np.random.default_rng(8)
    records = []
    for i in range(240):
        variant = ("control", "treatment")[i % 2]
        slow = 1.25 if variant == "treatment" else 1.0
        failed = i % 37 == 0
        records.append(
            record(
                f"r{i}",
                experiment=EXP,
                variant=variant,
                time=1_767_225_600.0 + 30 * i,
                stream=True,
                status=500 if failed else 200,
                error_type="server_error" if failed else None,
                ttft_ms=float(rng.lognormal(3.5, 0.4)) * slow,
                total_ms=float(rng.lognormal(6.0, 0.4)) * slow,
                tokens_per_second=float(rng.normal(50, 5)) / slow,
                fell_back=i == 5,
            )
        )
    store = SQLiteStore(path)
    await store.write(records)
    for i in range(0, 240, 3):
        await store.put_feedback(FeedbackRecord(f"r{i}", "accepted", i % 2 == 0, 1.0))
    await store.aclose()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    folder = tmp_path_factory.mktemp("page")
    asyncio.run(seed(folder / "g.db"))
    models = [ScriptedBackend(m, "a b") for m in ("local", "remote", "spare")]
    app = stored_app(
        models,
        [ab_route()],
        StoreSettings(f"sqlite:///{folder}/g.db"),
        ("local", "remote"),
        ServerSettings(api_keys=(KEY,)),
    )
    with ThreadedServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


def test_the_page_shows_the_json_report_with_plots_and_no_console_error(
    gateway: ThreadedServer, browser: Any
) -> None:
    report = httpx.get(
        f"{gateway.base_url}/v1/experiments/{EXP}/report",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    ).json()
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    # the one expected error: chromium logs the report's 401 before the key is entered
    expected_401 = "the server responded with a status of 401"
    page.on("pageerror", lambda e: problems.append(str(e)))
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))

    page.goto(f"{gateway.base_url}/experiments/{EXP}")
    # no key yet: the report's 401 is expected; the page asks for the key
    page.wait_for_selector("#login:not([hidden])", timeout=30_000)
    page.fill("#api-key", KEY)
    page.click("#login button")
    page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
    assert page.is_hidden("#login") and page.is_visible("#report")
    assert page.evaluate("sessionStorage.getItem('gateway-api-key')") == KEY
    assert not any(KEY in url for url, _ in sent), "the key travelled in a URL"
    assert (
        f"{gateway.base_url}/v1/experiments/{EXP}/report",
        f"Bearer {KEY}",
    ) in sent

    rows = page.query_selector_all("#variants tbody tr")
    assert [r.get_attribute("data-variant") for r in rows] == [
        v["name"] for v in report["variants"]
    ]
    for row, variant in zip(rows, report["variants"], strict=True):
        assert row.query_selector("[data-metric=n]").get_attribute("data-value") == str(
            variant["n"]
        )
        for metric in ("ttft_ms", "total_ms", "tokens_per_second"):
            for stat in ("mean", "p50", "p95"):
                cell = row.query_selector(f"[data-metric='{metric}.{stat}']")
                expected = variant["metrics"][metric][stat]
                assert float(cell.get_attribute("data-value")) == pytest.approx(
                    expected["value"], rel=1e-12
                )
                # the interval is printed beside the value
                assert cell.query_selector("small") is not None
        for rate in ("error_rate", "cancel_rate"):
            cell = row.query_selector(f"[data-metric={rate}]")
            value = variant["rates"][rate]["value"]
            assert float(cell.get_attribute("data-value")) == pytest.approx(value, rel=1e-12)
            assert cell.inner_text().startswith(f"{100 * value:.2f}%")
        accepted = row.query_selector("[data-metric='feedback.accepted']")
        assert float(accepted.get_attribute("data-value")) == pytest.approx(
            variant["feedback"]["accepted"]["value"], rel=1e-12
        )
    # the summary: exclusions and the sample-ratio verdict
    assert "fell_back: 1" in page.inner_text("[data-excluded=fell_back]")
    assert page.inner_text("#srm").startswith("Sample ratio: ok")
    assert page.query_selector_all("#comparisons tbody tr")

    # the plots: each SVG drawn, with marks inside a non-empty box
    for kind, mark, least in (
        ("interval", "line", 3),  # a bar per variant, the axis
        ("latency", "path", 2),
        ("assignments", "polyline", 1),
    ):
        plots = page.query_selector_all(f"svg[data-plot={kind}]")
        assert plots, kind
        for plot in plots:
            box = plot.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 50, kind
            assert len(plot.query_selector_all(mark)) >= least, kind
            assert plot.evaluate("s => s.getBBox().width * s.getBBox().height") > 0, kind
    latency = page.query_selector("svg[data-plot=latency] path")
    assert len(latency.get_attribute("d").split("L")) > 20  # a step line over the bins
    assert [p for p in problems if expected_401 not in p] == [], problems
    assert sum(expected_401 in p for p in problems) <= 1, problems
    page.close()


def test_a_wrong_key_is_refused_and_forgotten(gateway: ThreadedServer, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{gateway.base_url}/experiments/{EXP}")
    page.wait_for_selector("#login:not([hidden])", timeout=30_000)
    page.fill("#api-key", "sk-wrong")
    page.click("#login button")
    deadline = time.monotonic() + 30
    while "refused" not in page.inner_text("#status"):
        assert time.monotonic() < deadline, page.inner_text("#status")
        page.wait_for_timeout(50)
    assert page.evaluate("sessionStorage.getItem('gateway-api-key')") is None
    assert page.is_hidden("#report")
    page.close()
