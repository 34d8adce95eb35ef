"""Quick benchmark runs write to an untracked folder; full runs to the tracked one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.paths import QUICK, RESULTS, results_dir

ROOT = Path(__file__).resolve().parents[2]


def _ignored(path: Path) -> bool:
    done = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", str(path.relative_to(ROOT))], cwd=ROOT
    )
    assert done.returncode in (0, 1), "git check-ignore failed"
    return done.returncode == 0


@pytest.fixture(autouse=True)
def _needs_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")


def test_quick_results_are_ignored_and_full_results_are_not() -> None:
    assert results_dir(quick=True) == QUICK and QUICK.is_dir()
    assert results_dir(quick=False) == RESULTS
    for name in ("overhead.json", "quick.json", "quick.png", "tmp-smollm2-gateway.log"):
        assert _ignored(QUICK / name), name
    for name in ("overhead.json", "full-threads1.json", "attack.json"):
        assert not _ignored(RESULTS / name), name


def test_no_quick_result_is_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "bench/results"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert tracked, "the full results are tracked"
    assert [
        t for t in tracked if "quick" in Path(t).name or t.startswith("bench/results/quick/")
    ] == []
