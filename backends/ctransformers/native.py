"""A thin, guarded wrapper over ctransformers' C functions.

ctransformers' own Python class has bugs that corrupt memory (see the guards below),
so this calls its shared library directly. Every method runs on one thread per model
(backend.py), never two at once: the library is not thread-safe.

Guards, each against a crash reproduced with ctransformers 0.2.27:
- tokenize: its `LLM.tokenize` allocates len(text)+1 ints but the C side writes every
  token, so a non-ASCII prompt overflowed the heap. The buffer here is 2*bytes+8.
- sample: top_k outside 1..vocab aborts the gpt2-family sampler, top_k 0 or
  temperature 0 are undefined: top_k is clamped, greedy is top_k 1 at temperature 1.
- batch size <= 64 (options.py); tokens past the context are refused (backend.py),
  since it silently overwrites the last KV cell there.
- logits: a live view of the last position, copied at once.
- one evaluation at a time in the whole process: two legacy-GGML models evaluating at
  once share one static scratch buffer of the library (a segfault), so every call into
  it holds `NATIVE_LOCK`. That lock is process-wide on purpose, like the buffer it
  guards; with the default `isolation = "process"` each model has a process of its own.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backends.errors import BackendError

NATIVE_LOCK = threading.Lock()  # the library's static buffers are per process


class CtModel:
    def __init__(
        self,
        path: Path,
        model_type: str,
        lib: str,
        threads: int,
        batch_size: int,
        context_length: int | None,
        gpu_layers: int,
    ) -> None:
        with NATIVE_LOCK:
            self._load(path, model_type, lib, threads, batch_size, context_length, gpu_layers)

    def _load(
        self,
        path: Path,
        model_type: str,
        lib: str,
        threads: int,
        batch_size: int,
        context_length: int | None,
        gpu_layers: int,
    ) -> None:
        from ctransformers.llm import Config, load_library

        try:
            self._lib = load_library(lib, gpu=gpu_layers > 0)
        except OSError as exc:  # no such build for this machine, or CUDA missing
            raise BackendError(
                f"ctransformers' {lib!r} library cannot be loaded here "
                f'({type(exc).__name__}); try lib = "basic"'
            ) from exc
        config = Config(
            batch_size=batch_size,
            threads=threads,
            context_length=context_length or -1,
            gpu_layers=gpu_layers,
        )
        self._threads = threads
        self._batch = batch_size
        self._llm = self._lib.ctransformers_llm_create(
            str(path).encode(), model_type.encode(), config.to_struct()
        )
        if not self._llm:
            raise BackendError(f"ctransformers could not load this {model_type} model file")
        self.n_vocab = int(self._lib.ctransformers_llm_vocab_size(self._llm))
        self.n_ctx = int(self._lib.ctransformers_llm_context_length(self._llm))
        self.eos = int(self._lib.ctransformers_llm_eos_token_id(self._llm))
        self.bos = int(self._lib.ctransformers_llm_bos_token_id(self._llm))
        arch = self._lib.ctransformers_llm_architecture(self._llm) or b""
        self.architecture = arch.decode(errors="replace") or model_type
        self.n_past = 0

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm:
            with NATIVE_LOCK:
                self._lib.ctransformers_llm_delete(llm)

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode("utf-8")
        buf = (ctypes.c_int * (2 * len(data) + 8))()
        with NATIVE_LOCK:
            n = self._lib.ctransformers_llm_tokenize(self._llm, data, add_bos, buf)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        with NATIVE_LOCK:
            return self._lib.ctransformers_llm_detokenize(self._llm, token) or b""

    def token_text(self, token: int, special: bool = True) -> str:
        """A token's text for log-probabilities (a lone byte of a character reads as
        U+FFFD, as in the llama_cpp backend)."""
        return self.piece(token).decode("utf-8", errors="replace")

    def is_eos(self, token: int) -> bool:
        with NATIVE_LOCK:
            return bool(self._lib.ctransformers_llm_is_eos_token(self._llm, token))

    def reset(self) -> None:
        with NATIVE_LOCK:
            self._lib.ctransformers_llm_reset(self._llm)
        self.n_past = 0

    def eval(self, tokens: Sequence[int]) -> None:
        if self.n_past + len(tokens) > self.n_ctx:
            raise BackendError("the sequence ran past the model's context")
        array = (ctypes.c_int * len(tokens))(*tokens)
        with NATIVE_LOCK:
            ok = self._lib.ctransformers_llm_batch_eval(
                self._llm, array, len(tokens), self.n_past, self._batch, self._threads
            )
        if not ok:
            raise BackendError("ctransformers failed to evaluate the tokens")
        self.n_past += len(tokens)

    def logits(self) -> np.ndarray:
        """A copy of the last position's logits (the library's buffer is reused)."""
        with NATIVE_LOCK:
            size = int(self._lib.ctransformers_llm_logits_size(self._llm))
            data = self._lib.ctransformers_llm_logits_data(self._llm)
            return np.ctypeslib.as_array(data, shape=(size,))[-self.n_vocab :].copy()

    def sample(
        self,
        last_tokens: Sequence[int],
        top_k: int,
        top_p: float,
        temperature: float,
        repetition_penalty: float,
        seed: int,
    ) -> int:
        if temperature <= 0:
            top_k, temperature = 1, 1.0
        top_k = min(max(top_k, 1), self.n_vocab) if top_k > 0 else self.n_vocab
        last = (ctypes.c_int * len(last_tokens))(*last_tokens)
        with NATIVE_LOCK:
            token = self._lib.ctransformers_llm_sample(
                self._llm,
                last,
                len(last_tokens),
                top_k,
                top_p,
                temperature,
                repetition_penalty,
                seed,
            )
        return int(token)
