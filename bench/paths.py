"""Where benchmark results go: full runs to bench/results/ (tracked, cited by the docs),
quick runs to bench/results/quick/ (ignored by git), so a smoke run never rewrites a
committed result."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = RESULTS / "quick"


def results_dir(quick: bool) -> Path:
    """The folder for this run's files, created if needed."""
    folder = QUICK if quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder
