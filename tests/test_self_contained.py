"""The tests need nothing beside the repository: a clone on a new machine passes.
(`.ci/run` proves it end to end by running the suite from a fresh clone.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import schema

ROOT = Path(__file__).resolve().parents[1]
# What reaching outside the clone looks like: a `shared/` folder beside it, or paths
# built upwards from the repository root.
OUTSIDE = re.compile(r"""\.\./shared|["']shared["']|ROOT\.parent|parents\[\d\]\.parent""")


def test_openai_schemas_are_vendored_in_the_repository() -> None:
    path = schema.SPEC_PATH.resolve()
    assert path.is_relative_to(ROOT), path
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(path.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert tracked.returncode == 0, "the vendored spec is not committed"
    assert (path.parent / "README.md").read_text().count("MIT") >= 1  # source and licence
    assert "CreateCompletionResponse" in schema.spec()["components"]["schemas"]


def test_no_code_reads_outside_the_repository() -> None:
    offenders = []
    for folder in ("gateway", "backends", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
