"""A throwaway PostgreSQL cluster for tests: Debian's server binaries (initdb, pg_ctl;
`.ci/dev.py test` installs the `postgresql` package when they are missing), a temp
folder, trust authentication, a free loopback port. Run as root, the server runs as
the `postgres` user (PostgreSQL refuses root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.server import free_port


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PgCluster:
    """`folder` must be reachable by the server's user: a fresh `tempfile.mkdtemp()`
    (pytest's tmp_path is private to root)."""

    def __init__(self, folder: Path) -> None:
        found = postgres_bin()
        assert found is not None, "no PostgreSQL server binaries (initdb)"
        self.bin = found
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql://gateway@127.0.0.1:{self.port}/postgres"
        self._demote: Callable[[], None] | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
            os.chown(folder, user.pw_uid, user.pw_gid)
            self._demote = lambda: (os.setgid(user.pw_gid), os.setuid(user.pw_uid))  # type: ignore[func-returns-value]

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=self._demote,
            cwd=self.folder,
            env={**os.environ, "LC_ALL": "C"},
            timeout=120,
        )

    def init(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "gateway", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        return self

    def start(self) -> PgCluster:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "pg.log"),
            "-w", "-t", "60", "start",
        )
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def log(self) -> str:
        path = self.folder / "pg.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
