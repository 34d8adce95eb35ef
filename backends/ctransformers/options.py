"""The `[models.options]` of a `ctransformers` model, validated with errors naming the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from backends.errors import ConfigError
from backends.options import check_keys, integer, seconds, string

Lib = Literal["avx2", "avx", "basic", "cuda"]
LIBS = ("avx2", "avx", "basic", "cuda")
# ctransformers' names for the architectures it reads from legacy GGML files, plus
# "llama" and "falcon" (GGUF or GGML). Aliases map to the name it expects.
MODEL_TYPES = {
    "gpt2": "gpt2",
    "gpt_bigcode": "gpt_bigcode",
    "starcoder": "gpt_bigcode",
    "gpt_neox": "gpt_neox",
    "gptj": "gptj",
    "falcon": "falcon",
    "mpt": "mpt",
    "replit": "replit",
    "dolly-v2": "dolly-v2",
    "llama": "llama",
}
MAX_BATCH = 64  # larger first batches overflow its scratch buffers or hit a GGML_ASSERT
SOURCE_KEYS = ("model_path", "hf_repo")
KNOWN_KEYS = {
    *SOURCE_KEYS,
    "hf_file",
    "hf_revision",
    "model_type",
    "lib",
    "threads",
    "context_length",
    "batch_size",
    "gpu_layers",
    "max_queue",
    "chat_template",
    "chat_template_file",
    "template_timeout",
    "template_max_chars",
}


@dataclass(frozen=True, slots=True)
class CTransformersOptions:
    model_type: str
    model_path: Path | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    hf_revision: str | None = None
    lib: Lib = "avx2"  # explicit: lib=None makes ctransformers probe the CPU for ~2.5 s
    threads: int = 1
    context_length: int | None = None  # None: the model's own
    batch_size: int = 8
    gpu_layers: int = 0
    max_queue: int = 16  # requests waiting behind the running one before 429
    chat_template: str | None = None
    template_timeout: float = 2.0
    template_max_chars: int = 4_000_000


def parse_options(options: Mapping[str, Any], base_dir: Path) -> CTransformersOptions:
    check_keys(options, KNOWN_KEYS, SOURCE_KEYS, "model_path or hf_repo (with hf_file)")
    if "model_type" not in options:
        raise ConfigError(f"model_type is required; one of {', '.join(MODEL_TYPES)}", "model_type")
    model_type = options["model_type"]
    if model_type not in MODEL_TYPES:
        hint = " (ctransformers cannot run BLOOM models at all)" if model_type == "bloom" else ""
        raise ConfigError(
            f"model_type {model_type!r} is not supported by ctransformers{hint}; "
            f"one of {', '.join(MODEL_TYPES)}",
            "model_type",
        )
    values: dict[str, Any] = {"model_type": MODEL_TYPES[model_type]}
    for key in ("hf_repo", "hf_file", "hf_revision"):
        if key in options:
            values[key] = string(options, key)
    if "hf_repo" in values and "hf_file" not in values:
        raise ConfigError("hf_repo needs hf_file: the model file in the repository", "hf_file")
    if "model_path" in options:
        path = Path(os.path.expanduser(string(options, "model_path")))
        values["model_path"] = path if path.is_absolute() else (base_dir / path).resolve()
    if "lib" in options:
        if options["lib"] not in LIBS:
            raise ConfigError(f"lib must be one of {', '.join(LIBS)}", "lib")
        values["lib"] = options["lib"]
    for key, low in (
        ("threads", 1),
        ("context_length", 16),
        ("batch_size", 1),
        ("gpu_layers", 0),
        ("max_queue", 0),
    ):
        if key in options:
            values[key] = integer(options, key, low)
    if values.get("batch_size", 0) > MAX_BATCH:
        raise ConfigError(
            f"batch_size must be at most {MAX_BATCH}: larger batches crash ctransformers",
            "batch_size",
        )
    if values.get("gpu_layers") and values.get("lib", "avx2") != "cuda":
        raise ConfigError('gpu_layers needs lib = "cuda"', "gpu_layers")
    if "chat_template" in options and "chat_template_file" in options:
        raise ConfigError("set chat_template or chat_template_file, not both", "chat_template")
    if "chat_template" in options:
        values["chat_template"] = string(options, "chat_template")
    if "chat_template_file" in options:
        path = Path(os.path.expanduser(string(options, "chat_template_file")))
        path = path if path.is_absolute() else base_dir / path
        try:
            values["chat_template"] = path.read_text(encoding="utf-8")
        except OSError:
            raise ConfigError(f"cannot read {path}", "chat_template_file") from None
    if "template_timeout" in options:
        values["template_timeout"] = seconds(options, "template_timeout", positive=True)
    if "template_max_chars" in options:
        values["template_max_chars"] = integer(options, "template_max_chars", 1024)
    return CTransformersOptions(**values)
