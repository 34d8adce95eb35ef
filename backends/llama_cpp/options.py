"""The `[models.options]` of a `llama_cpp` model, validated with errors that name the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from backends.errors import ConfigError
from backends.options import check_keys, integer, seconds, string

Device = Literal["auto", "cpu", "cuda", "metal"]
FlashAttn = Literal["auto", "on", "off"]
SOURCE_KEYS = ("model_path", "hf_repo", "package")
KNOWN_KEYS = {
    *SOURCE_KEYS,
    "hf_file",
    "hf_revision",
    "package_file",
    "n_ctx",
    "threads",
    "device",
    "n_gpu_layers",
    "parallel",
    "n_batch",
    "max_queue",
    "chat_template",
    "chat_template_file",
    "template_timeout",
    "template_max_chars",
    "flash_attn",
    "deterministic",
}


@dataclass(frozen=True, slots=True)
class LlamaCppOptions:
    # where the GGUF comes from: exactly one of these
    model_path: Path | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    hf_revision: str | None = None
    package: str | None = None
    package_file: str = "*.gguf"
    # engine
    n_ctx: int = 2048  # context window of each sequence
    threads: int = 0  # 0: all cores but one (at least one)
    device: Device = "auto"
    n_gpu_layers: int = -1  # -1: all layers when offloading
    parallel: int = 4  # sequences decoded together
    n_batch: int = 512  # tokens per decode step (prompt chunk size)
    max_queue: int = 64  # requests waiting for a slot before 429
    chat_template: str | None = None  # Jinja source; overrides the GGUF's own
    template_timeout: float = 2.0  # seconds one chat-template render may take
    template_max_chars: int = 4_000_000  # rendered prompt (and any string built on the way)
    flash_attn: FlashAttn = "auto"  # auto: llama.cpp's choice (on where supported)
    # true: one KV stream per sequence, so a prompt's output is the same alone or
    # batched; false: one unified KV cache (llama.cpp's kv_unified), see the README
    deterministic: bool = True

    @property
    def effective_threads(self) -> int:
        """ggml's decode threads meet at spinning barriers after every operation: when
        one of them is preempted (another busy process on the machine), all of them
        wait. One core left free keeps a shared machine from collapsing the speed."""
        return self.threads or default_threads()


def default_threads() -> int:
    """The cores this process may run on, minus one, and at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def parse_options(options: Mapping[str, Any], base_dir: Path) -> LlamaCppOptions:
    check_keys(options, KNOWN_KEYS, SOURCE_KEYS, "model_path, hf_repo (with hf_file) or package")
    values: dict[str, Any] = {}
    for key in ("hf_repo", "hf_file", "hf_revision", "package", "package_file"):
        if key in options:
            values[key] = string(options, key)
    if "model_path" in options:
        path = Path(os.path.expanduser(string(options, "model_path")))
        values["model_path"] = path if path.is_absolute() else (base_dir / path).resolve()
    if "hf_repo" in values and "hf_file" not in values:
        raise ConfigError("hf_repo needs hf_file: the GGUF file name in the repository", "hf_file")
    for key, low in (
        ("n_ctx", 16),
        ("threads", 0),
        ("parallel", 1),
        ("n_batch", 8),
        ("max_queue", 0),
        ("n_gpu_layers", -1),
    ):
        if key in options:
            values[key] = integer(options, key, low)
    if "chat_template" in options and "chat_template_file" in options:
        raise ConfigError("set chat_template or chat_template_file, not both", "chat_template")
    if "chat_template" in options:
        values["chat_template"] = string(options, "chat_template")
    if "template_timeout" in options:
        values["template_timeout"] = seconds(options, "template_timeout", positive=True)
    if "template_max_chars" in options:
        values["template_max_chars"] = integer(options, "template_max_chars", 1024)
    if "chat_template_file" in options:
        path = Path(os.path.expanduser(string(options, "chat_template_file")))
        path = path if path.is_absolute() else base_dir / path
        try:
            values["chat_template"] = path.read_text(encoding="utf-8")
        except OSError:
            raise ConfigError(f"cannot read {path}", "chat_template_file") from None
    if "device" in options:
        device = options["device"]
        if device not in ("auto", "cpu", "cuda", "metal"):
            raise ConfigError("device must be one of auto, cpu, cuda, metal", "device")
        values["device"] = device
    if "flash_attn" in options:
        values["flash_attn"] = _flash_attn(options["flash_attn"])
    if "deterministic" in options:
        if not isinstance(options["deterministic"], bool):
            raise ConfigError("deterministic must be true or false", "deterministic")
        values["deterministic"] = options["deterministic"]
    return LlamaCppOptions(**values)


def _flash_attn(value: Any) -> FlashAttn:
    """ "auto", "on" or "off"; TOML's true and false mean on and off."""
    if value is True or value == "on":
        return "on"
    if value is False or value == "off":
        return "off"
    if value == "auto":
        return "auto"
    raise ConfigError(f"flash_attn must be one of auto, on, off (got {value!r})", "flash_attn")
