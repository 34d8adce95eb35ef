"""`gateway report --config FILE NAME [--since WHEN] [--json]`: the experiment report
from the config's `[store]`, as a terminal table (or the same JSON as
`GET /v1/experiments/{name}/report`). Exit 0 with a report, 1 for an unknown experiment
or an unreachable store, 2 for a configuration or argument error."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gateway.config import ConfigFileError, GatewayConfig, load_config
from gateway.records.store import open_store
from gateway.report.service import compute, load_experiment, parse_since
from gateway.report.table import render


def add_report_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="print an experiment's report from the [store]")
    report.add_argument("--config", type=Path, required=True, help="TOML config file")
    report.add_argument("name", help="the experiment's name ([routes.experiment] name)")
    report.add_argument("--since", help="only requests from then on: epoch seconds or ISO 8601")
    report.add_argument("--json", action="store_true", help="print the JSON report instead")


def run_report(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigFileError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if config.store is None:
        print(f"gateway: {args.config}: no [store] section: nothing is recorded", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"gateway: --since: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_report(config, args.name, since))
    except Exception as exc:
        print(f"gateway: the record store failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if report is None:
        print(f"gateway: no experiment is named {args.name!r}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else render(report))
    return 0


async def _report(config: GatewayConfig, name: str, since: float | None) -> dict[str, Any] | None:
    assert config.store is not None
    store = open_store(config.store, config.base_dir)
    try:
        loaded = await load_experiment(store, {r.id: r for r in config.routes}, name, since)
    finally:
        await store.aclose()
    return None if loaded is None else compute(loaded, config.report, since)
