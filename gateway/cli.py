"""The `gateway` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from gateway import __version__
from gateway.app import create_app
from gateway.config import ConfigFileError, load_config
from gateway.logs import configure_logging
from gateway.registry import ModelRegistry
from gateway.report.cli import add_report_parser, run_report
from gateway.server import GatewayServer, build_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the models of a config file")
    check = sub.add_parser("check", help="validate a config file and find its model files")
    for p in (serve, check):
        p.add_argument("--config", type=Path, required=True, help="TOML config file")
    convert = sub.add_parser(
        "convert-for-ctransformers",
        help="rewrite a byte-level-BPE llama GGUF (SmolLM2, ...) so ctransformers runs it",
    )
    convert.add_argument("source", type=Path, metavar="IN")
    convert.add_argument("target", type=Path, metavar="OUT")
    serve.add_argument("--host", help="overrides server.host and GATEWAY_HOST")
    serve.add_argument("--port", type=int, help="overrides server.port and GATEWAY_PORT")
    add_report_parser(sub)
    for p in (serve, check):
        p.add_argument("--log-format", choices=["auto", "json", "console"])
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return run_report(args)
    if args.command == "convert-for-ctransformers":
        return convert_for_ctransformers(args.source, args.target)
    try:
        config = load_config(args.config)
    except ConfigFileError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    server = config.server
    configure_logging(args.log_format or server.log_format, args.log_level or server.log_level)
    log = structlog.get_logger("gateway")
    try:
        models = ModelRegistry.from_config(config)
    except ConfigFileError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        hidden = {m.id for m in config.models if m.hidden}
        for m in models.models:
            print(f"{m.id}: backend {m.backend.name}{', hidden' if m.id in hidden else ''}, ok")
        for route in config.routes:
            exp = route.experiment
            targets = [v.model for v in exp.variants] if exp else [str(route.model)]
            fallbacks = f" (fallbacks: {', '.join(route.fallbacks)})" if route.fallbacks else ""
            print(f"{route.id}: route to {', '.join(targets)}{fallbacks}, ok")
        return 0

    exit_code = 0
    uv_server: GatewayServer | None = None

    def on_fatal(message: str) -> None:
        nonlocal exit_code
        exit_code = 1
        print(f"gateway: {message}", file=sys.stderr)
        if uv_server is not None:
            uv_server.should_exit = True

    app = create_app(config, models, on_fatal)
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    uv_server = build_server(app, server, host, port, freeze_heap=True)
    log.info("starting", host=host, port=port, models=[m.id for m in models.models])
    uv_server.run()
    return exit_code or (0 if uv_server.started else 1)


def convert_for_ctransformers(source: Path, target: Path) -> int:
    from backends.ctransformers.convert import convert
    from backends.errors import ConfigError

    if not source.is_file():
        print(f"gateway: no such file: {source}", file=sys.stderr)
        return 2
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        counts = convert(source, target)
    except ConfigError as exc:
        print(f"gateway: cannot convert {source}: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {target}: {counts['tokens']} tokens as raw bytes, "
        f"{counts['merges_kept']} of {counts['merges']} merges kept, scores and "
        'output.weight added; serve it with backend = "ctransformers", model_type = "llama"'
    )
    return 0
