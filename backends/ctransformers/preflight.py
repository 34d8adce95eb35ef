"""Refuse, before ctransformers reads it, a model file it cannot load or would crash on.

ctransformers takes a path that does not exist for a Hugging Face repository id (a
network attempt), crashes on some files, and maps GGUF tensors for llama and falcon
only, through a llama.cpp of September 2023: a modern byte-level-BPE llama-family GGUF
(SmolLM2, Llama 3, Qwen) segfaults while loading once it has scores. Each case is
refused here with what it supports instead.
"""

from __future__ import annotations

import struct
from pathlib import Path

from backends.ctransformers.convert import MARKER
from backends.ctransformers.options import CTransformersOptions
from backends.errors import ConfigError
from backends.llama_cpp.gguf_check import ArrayInfo, GGUFError, read_gguf

GGUF_ARCHS = ("llama", "falcon")
# legacy GGML magics: ggml (unversioned), ggmf, ggjt
GGML_MAGICS = (0x67676D6C, 0x67676D66, 0x67676A74)
SUPPORTED = (
    "ctransformers runs legacy GGML files of gpt2, gpt_bigcode/starcoder, gpt_neox, gptj, "
    "falcon, mpt, replit, dolly-v2 and llama, and GGUF files of llama (with a "
    "SentencePiece vocabulary) and falcon"
)
CONVERT = (
    "convert it first with `gateway convert-for-ctransformers IN OUT`, or serve it with "
    "the llama_cpp backend"
)


def check_model_file(path: Path, opts: CTransformersOptions) -> str:
    """The model type to pass to ctransformers ("gguf" style files keep the configured
    llama/falcon); raise ConfigError saying why the file cannot be served."""
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}", "model_path")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ConfigError(f"cannot read the model file ({exc.strerror})", "model_path") from None
    if head == b"GGUF":
        return _check_gguf(path, opts)
    if len(head) == 4 and struct.unpack("<I", head)[0] in GGML_MAGICS:
        return opts.model_type
    raise ConfigError(f"not a GGML or GGUF model file; {SUPPORTED}", "model_path")


def _check_gguf(path: Path, opts: CTransformersOptions) -> str:
    try:
        summary = read_gguf(path)
    except GGUFError as exc:
        raise ConfigError(f"the model file cannot be loaded: {exc}", "model_path") from None
    arch = summary.architecture
    if arch == "bloom":
        raise ConfigError(f"ctransformers cannot run BLOOM models; {SUPPORTED}", "model_path")
    if arch not in GGUF_ARCHS:
        raise ConfigError(
            f"a GGUF of architecture {arch!r}: ctransformers' GGUF loader maps llama and "
            f"falcon only; {SUPPORTED}",
            "model_path",
        )
    if arch != opts.model_type:
        raise ConfigError(
            f"the file is a {arch} GGUF but model_type is {opts.model_type!r}", "model_type"
        )
    if arch == "llama":
        meta = summary.metadata
        tokenizer = meta.get("tokenizer.ggml.model")
        if tokenizer != "llama" and meta.get(MARKER) is not True:
            raise ConfigError(
                f"a llama-family GGUF with a {tokenizer!r} (byte-level BPE) vocabulary: "
                f"ctransformers crashes on these; {CONVERT}",
                "model_path",
            )
        scores = meta.get("tokenizer.ggml.scores")
        types = meta.get("tokenizer.ggml.token_type")
        if not isinstance(scores, ArrayInfo) or not isinstance(types, ArrayInfo):
            raise ConfigError(
                "a llama GGUF without tokenizer.ggml.scores or token_type: "
                f"ctransformers cannot load it; {CONVERT}",
                "model_path",
            )
        if "llama.attention.layer_norm_rms_epsilon" not in meta:
            raise ConfigError(
                "a llama GGUF without llama.attention.layer_norm_rms_epsilon: "
                "ctransformers cannot load it",
                "model_path",
            )
        if not any(t.name == "output.weight" for t in summary.tensors):
            raise ConfigError(
                f"a llama GGUF with tied embeddings (no output.weight): {CONVERT}", "model_path"
            )
    return opts.model_type
