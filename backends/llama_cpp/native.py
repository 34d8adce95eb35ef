"""Thin, typed wrappers over llama-cpp-python's low-level (ctypes) API.

Everything that touches `llama_cpp` directly lives here, and every failure of the
native library is turned into a `BackendError` here, so the engine above works with
Python objects and the gateway's own errors only.
"""

from __future__ import annotations

import ctypes
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

import llama_cpp
import numpy as np

from backends.errors import BackendError
from backends.llama_cpp.options import FlashAttn


def init_backend() -> None:
    # Idempotent in llama.cpp: it only sets up timers and lookup tables.
    llama_cpp.llama_backend_init()


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def system_info() -> str:
    return (llama_cpp.llama_print_system_info() or b"").decode("utf-8", "replace")


# llama_context_params.flash_attn_type; "auto" lets llama.cpp enable it where the
# device supports it for the model (on CPU: yes).
FLASH_ATTN_TYPES: Mapping[str, int] = MappingProxyType(
    {
        "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
        "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }
)


@dataclass(frozen=True, slots=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int
    # repository-level FIM (Qwen2.5-Coder's <|repo_name|>, <|file_sep|>); -1: none
    repo: int = -1
    separator: int = -1


class LoadLog:
    """Collects what llama.cpp logs at warning and error level while a model loads, so
    that a failed load can say why. llama-cpp-python's own log callback is put back
    afterwards (the callback is process-wide, so loads must not overlap)."""

    # ggml_log_level: 3 warning, 4 error, 5 continues the previous message
    WARN, ERROR, CONT = 3, 4, 5

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self._last = 0
        self._callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", "replace")
        if level == self.CONT:
            if self.lines and self._last in (self.WARN, self.ERROR):
                self.lines[-1] = (self._last, self.lines[-1][1] + message)
            return
        self._last = level
        if level in (self.WARN, self.ERROR) and len(self.lines) < 200:
            self.lines.append((level, message))

    def __enter__(self) -> LoadLog:
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            original = importlib.import_module("llama_cpp._logger").llama_log_callback
        except (ImportError, AttributeError):
            original = None  # llama.cpp's default: print to stderr
        llama_cpp.llama_log_set(original, ctypes.c_void_p(0))

    def reason(self, path: Path) -> str | None:
        """What llama.cpp said went wrong, without file paths (clients may see it)."""
        errors = [text.strip() for level, text in self.lines if level == self.ERROR]
        marker = "error loading model: "
        text = next((e for e in errors if marker in e), errors[0] if errors else None)
        if text is None:
            return None
        # "llama_model_load: error loading model: unknown model architecture: 'x'"
        text = text.rsplit(marker, 1)[-1].replace(str(path), path.name)
        return re.sub(r"(?:[A-Za-z]:)?[\\/][^\s'\"]*[\\/]([^\s'\"/\\]+)", r"\1", text)[:300]


class Model:
    """Weights and vocabulary, loaded once and shared by every sequence."""

    def __init__(self, path: Path, n_gpu_layers: int) -> None:
        init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        with LoadLog() as load_log:
            self._ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            why = load_log.reason(path)
            raise BackendError(
                f"llama.cpp could not load the model file {path.name!r}"
                + (f": {why}" if why else "")
            )
        self._vocab = llama_cpp.llama_model_get_vocab(self._ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._ptr))
        self.size_bytes = int(llama_cpp.llama_model_size(self._ptr))
        self.bos = int(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self._vocab))
        self.pad = int(llama_cpp.llama_vocab_pad(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    @property
    def ptr(self) -> llama_cpp.llama_model_p:
        return self._ptr

    @property
    def vocab(self) -> llama_cpp.llama_vocab_p:
        return self._vocab

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self._ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def fim_tokens(self) -> FimTokens | None:
        pre = llama_cpp.llama_vocab_fim_pre(self._vocab)
        suf = llama_cpp.llama_vocab_fim_suf(self._vocab)
        mid = llama_cpp.llama_vocab_fim_mid(self._vocab)
        if min(pre, suf, mid) < 0:
            return None
        rep = llama_cpp.llama_vocab_fim_rep(self._vocab)
        sep = llama_cpp.llama_vocab_fim_sep(self._vocab)
        return FimTokens(int(pre), int(suf), int(mid), int(rep), int(sep))

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buf, cap, add_special, parse_special
        )
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, cap, add_special, parse_special
            )
        if n < 0:
            raise BackendError("tokenization failed")
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[: max(n, 0)]

    def detokenize(self, tokens: Sequence[int], special: bool = True) -> str:
        """The text of `tokens`, special tokens written out by default (as llama.cpp's
        server detokenizes, and as log-probs show them), so the text of an echoed
        token prompt lines up with its tokens."""
        pieces = b"".join(self.piece(t, special) for t in tokens)
        return pieces.decode("utf-8", errors="replace")

    def token_text(self, token: int, special: bool = True) -> str:
        return self.piece(token, special=special).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def max_token_bytes(self) -> int:
        """The most bytes of text one token stands for (special tokens included):
        text of n bytes needs at least n / this many tokens. Computed once."""
        cached: int | None = getattr(self, "_max_token_bytes", None)
        if cached is None:
            pieces = (len(self.piece(t, special=True)) for t in range(self.n_vocab))
            longest = max(pieces, default=1)
            cached = self._max_token_bytes = max(1, longest)
        return cached

    def special_texts(self) -> tuple[str, ...]:
        """The texts that only `tokenize(parse_special=True)` turns into tokens: those of
        control and unknown tokens (llama.cpp matches user-defined ones either way).
        Computed once, on first use."""
        cached: tuple[str, ...] | None = getattr(self, "_special_texts", None)
        if cached is None:
            mask = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
            texts = set()
            for token in range(self.n_vocab):
                if llama_cpp.llama_vocab_get_attr(self._vocab, token) & mask:
                    raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
                    if raw:
                        texts.add(raw.decode("utf-8", "replace"))
            cached = tuple(sorted(texts, key=len, reverse=True))
            self._special_texts = cached
        return cached

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_model_free(self._ptr)
            self._ptr = None


class Context:
    """One inference context holding `n_seq` KV sequences of up to `n_ctx_seq` tokens
    each (`n_seq * n_ctx_seq` cells in all).

    Each sequence gets its own KV stream (`kv_unified = False`) unless asked otherwise:
    in a unified cache the sequences' cells interleave, which changes the summation
    order inside attention, so a greedy sequence decoded beside others drifts from its
    solo output (measured on SmolLM2: 4 of 8 prompts diverged, some at the 4th token).
    With separate streams the outputs are bit-identical to solo decoding."""

    def __init__(
        self,
        model: Model,
        n_seq: int,
        n_ctx_seq: int,
        n_batch: int,
        n_threads: int,
        kv_unified: bool = False,
        flash_attn: FlashAttn = "auto",
    ) -> None:
        params = llama_cpp.llama_context_default_params()
        params.flash_attn_type = FLASH_ATTN_TYPES[flash_attn]
        params.n_ctx = n_seq * n_ctx_seq
        n_batch = max(n_batch, n_seq)  # room for the next token of every sequence
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.kv_unified = kv_unified
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        self._ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise BackendError("llama.cpp could not create a context (out of memory?)")
        self._mem = llama_cpp.llama_get_memory(self._ptr)
        self.n_batch = n_batch
        self.n_seq = n_seq
        self.kv_unified = kv_unified
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._model = model

    @property
    def ptr(self) -> llama_cpp.llama_context_p:
        return self._ptr

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence id, wants logits) entries in one batch."""
        batch = self._batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(self._ptr, batch)
        if rc != 0:
            raise BackendError(f"llama_decode failed (code {rc})")

    def forget(self, seq: int, from_pos: int = -1) -> None:
        """Drop a sequence's KV entries from `from_pos` on (all of them by default)."""
        llama_cpp.llama_memory_seq_rm(self._mem, seq, from_pos, -1)

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ptr)
            self._ptr = None


def logits_row(ctx: Context, batch_index: int, n_vocab: int) -> np.ndarray:
    """The logits the last decode produced for the batch entry at `batch_index` (a view
    into llama.cpp's buffer: valid until the next decode)."""
    ptr = llama_cpp.llama_get_logits_ith(ctx.ptr, batch_index)
    if not ptr:
        raise BackendError("llama.cpp returned no logits for a batch entry")
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,))
