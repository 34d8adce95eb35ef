"""llama.cpp's own C++ server, built from the llama.cpp vendored in the same
llama-cpp-python release and with the same CMake flags as the wheel the gateway runs on,
so the two contenders differ only in what sits above ggml.

The binary is built once per (version, flags) and kept beside the wheel cache:
~/.cache/inference-gateway/llama-server-<key>/llama-server (4 minutes on an idle 2-core
machine, up to 40 under load).

    .venv/bin/python -m bench.llama_server          # build if missing, print the path
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
# Server-only switches: no libcurl (nothing is downloaded), no tests, one static binary.
SERVER_FLAGS = [
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
]


def log(message: str) -> None:
    print(f"[llama-server] {message}", file=sys.stderr, flush=True)


def _dev() -> ModuleType:
    """The setup script, for its pinned version and flag presets (one source of truth)."""
    spec = importlib.util.spec_from_file_location("gateway_dev", ROOT / ".ci" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cache_dir() -> Path:
    dev = _dev()
    flags = dev.cmake_args()
    key = hashlib.sha256(f"{dev.LLAMA_CPP_VERSION}|{flags}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "inference-gateway" / f"llama-server-{key}"


def binary() -> Path | None:
    """The cached binary, or None when it has not been built."""
    path = cache_dir() / "llama-server"
    return path if path.is_file() else None


def _fetch_source(workdir: Path, version: str) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(workdir),
            f"llama-cpp-python=={version}",
        ],
        check=True,
    )
    archive = next(workdir.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return next(workdir.glob("llama_cpp_python-*/vendor/llama.cpp"))


def build() -> Path:
    """Build llama-server once per flag set; later calls return the cached binary."""
    found = binary()
    if found is not None:
        return found
    dev = _dev()
    flags = dev.cmake_args().split()
    target = cache_dir()
    log(f"building llama-server {dev.LLAMA_CPP_VERSION} with {' '.join(flags)}")
    log("this takes minutes (up to 40 on 2 busy cores), once per flag set")
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp:
        source = _fetch_source(Path(tmp), dev.LLAMA_CPP_VERSION)
        build_dir = Path(tmp) / "build"
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build_dir), *flags, *SERVER_FLAGS],
            check=True,
        )
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", jobs],
            check=True,
        )
        built = next(build_dir.rglob("bin/llama-server"))
        partial = target.with_name(target.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, partial / "llama-server")
        (partial / "FLAGS").write_text(" ".join([*flags, *SERVER_FLAGS]) + "\n")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    return target / "llama-server"


if __name__ == "__main__":
    print(build())
