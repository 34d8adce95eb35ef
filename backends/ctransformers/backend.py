"""The `ctransformers` backend: legacy GGML models (gpt2, starcoder, gpt_neox, gptj,
falcon, mpt, ...) and SentencePiece llama GGUFs through ctransformers.

One request runs at a time per model (the library is not thread-safe); the others wait
in a bounded queue and, past it, are refused with 429 like llama_cpp's admission. Every
call into the library runs on the model's own thread, so the event loop stays free
while it computes (it releases the GIL)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from collections.abc import Sequence as TokenIds
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

import structlog

from backends.base import (
    Admission,
    Backend,
    Capabilities,
    Finished,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    TextDelta,
    TokenizerInfo,
    TokenLogprob,
    Usage,
)
from backends.ctransformers.native import CtModel
from backends.ctransformers.options import CTransformersOptions, parse_options
from backends.ctransformers.preflight import check_model_file
from backends.ctransformers.queue import OneAtATime, Progress, QueueAdmission, Ticket
from backends.errors import BackendError, ContextLengthExceeded, InvalidRequest, check_token_ids
from backends.llama_cpp.chat_template import ChatTemplate
from backends.llama_cpp.gguf_check import GGUFSummary, read_gguf
from backends.llama_cpp.logprobs import describe
from backends.llama_cpp.options import LlamaCppOptions
from backends.llama_cpp.source import resolve_model_file
from backends.llama_cpp.template_guard import RenderLimits
from backends.text import StopMatcher, Utf8Stream

log = structlog.get_logger("backends.ctransformers")
T = TypeVar("T")
REPEAT_WINDOW = 64  # tokens the repetition penalty looks back on (ctransformers' default)
DEFAULT_GGUF_CONTEXT = 2048  # a GGUF's context when unset, at most (as llama_cpp's n_ctx)
SEED_MODULUS = 2**31 - 1  # a C int; -1 would mean time(), with a one-second resolution


class CTransformersBackend(Backend):
    name = "ctransformers"
    # it can still crash (a native library of 2023): a supervised worker by default
    default_isolation = "process"

    def __init__(self, model_id: str, opts: CTransformersOptions, model_file: Path) -> None:
        self.model_id = model_id
        self.opts = opts
        self.model_file = model_file
        self._model: CtModel | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue = OneAtATime(opts.max_queue)
        self._template: ChatTemplate | None = None
        self._template_source: str | None = None
        self._gguf: GGUFSummary | None = None
        self._add_bos = False
        self._n_ctx = 0
        self._bos_text: str | None = None
        self._eos_text: str | None = None
        self._generated = 0  # tokens sampled since load (a cancelled one stops adding)
        self._details: dict[str, Any] = {"file": model_file.name, "model_type": opts.model_type}

    @classmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        opts = parse_options(options, base_dir)
        # The llama_cpp resolver: a local path, or a file from the hub cache or hub.
        source = LlamaCppOptions(
            model_path=opts.model_path,
            hf_repo=opts.hf_repo,
            hf_file=opts.hf_file,
            hf_revision=opts.hf_revision,
        )
        model_file = resolve_model_file(source)
        check_model_file(model_file, opts)  # before ctransformers ever reads it
        return cls(model_id, opts, model_file)

    # -- lifecycle ----------------------------------------------------------------

    async def load(self) -> None:
        self._gguf = await asyncio.to_thread(_read_gguf, self.model_file)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"ctransformers-{self.model_id}")
        started = time.perf_counter()
        model = await self._run(self._load_blocking)
        # the special tokens' texts, read once on the model's thread
        self._bos_text, self._eos_text = await self._run(
            lambda: (_text_of(model, model.bos), _text_of(model, model.eos))
        )
        source = self.opts.chat_template or self._gguf_template()
        if source:
            self._template = ChatTemplate(
                source,
                self._bos_text or "",
                self._eos_text or "",
                RenderLimits(self.opts.template_timeout, self.opts.template_max_chars),
            )
            self._template_source = source
        self._model = model
        # legacy GGML files keep their own context whatever context_length says: a
        # smaller one is enforced here, a larger one cannot be
        self._n_ctx = min(model.n_ctx, self.opts.context_length or model.n_ctx)
        # as ctransformers itself: a BOS before llama prompts, unless the GGUF says not
        declared = self._gguf.metadata.get("tokenizer.ggml.add_bos_token") if self._gguf else None
        self._add_bos = declared if isinstance(declared, bool) else model.architecture == "llama"
        self._details.update(
            size_bytes=self.model_file.stat().st_size,
            architecture=model.architecture,
            n_ctx=self._n_ctx,
            lib=self.opts.lib,
            threads=self.opts.threads,
            batch_size=self.opts.batch_size,
            gpu_layers=self.opts.gpu_layers,
            chat_template=("config" if self.opts.chat_template else ("gguf" if source else None)),
        )
        log.info(
            "model loaded",
            model=self.model_id,
            file=str(self.model_file),
            model_type=self.opts.model_type,
            load_seconds=round(time.perf_counter() - started, 2),
            n_ctx=self._n_ctx,
        )

    def _load_blocking(self) -> CtModel:
        o = self.opts
        context = o.context_length
        if context is None and self._gguf is not None:
            # its llama.cpp defaults to 512 whatever the model was trained on
            trained = self._gguf.metadata.get(f"{self._gguf.architecture}.context_length")
            context = min(trained, DEFAULT_GGUF_CONTEXT) if isinstance(trained, int) else None
        return CtModel(
            self.model_file,
            o.model_type,
            o.lib,
            o.threads,
            o.batch_size,
            context,
            o.gpu_layers,
        )

    def _gguf_template(self) -> str | None:
        return self._gguf.chat_template if self._gguf is not None else None

    async def aclose(self) -> None:
        model, self._model = self._model, None
        thread, self._thread = self._thread, None
        if thread is not None:
            if model is not None:
                await asyncio.get_running_loop().run_in_executor(thread, model.close)
            thread.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # -- description --------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        model = self._model
        return Capabilities(
            streaming=True,
            token_prompts=False,
            logprobs=True,
            echo=False,  # it computes the last position's logits only: no prompt logprobs
            suffix=False,
            chat_template=self._template is not None,
            max_context=self._n_ctx if model is not None else self.opts.context_length,
            n_vocab=model.n_vocab if model is not None else None,
        )

    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, self.name, self.capabilities, dict(self._details))

    def stats(self) -> Mapping[str, Any]:
        return {**self._queue.stats(), "tokens_generated": self._generated}

    # -- generation ---------------------------------------------------------------

    def admit(self, count: int) -> Admission:
        return QueueAdmission(self, self._queue, self._queue.reserve(count), self._generate)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self._generate(request, None, None)

    async def _generate(
        self, request: GenerationRequest, ticket: Ticket | None, progress: Progress | None
    ) -> AsyncIterator[GenerationEvent]:
        self._queue.start(ticket)  # Overloaded (429) before any event
        try:
            model = self._model
            if model is None:
                raise BackendError(f"model {self.model_id!r} is not loaded")
            _check_params(request.params)
            text = await self._prompt_text(request)
            waiting = time.perf_counter()
            async with self._queue.turn():
                if progress is not None:
                    progress.queue_seconds = time.perf_counter() - waiting
                async for event in self._run_one(model, request, text, progress):
                    yield event
        finally:
            self._queue.done()

    async def _prompt_text(self, request: GenerationRequest) -> str:
        if request.suffix is not None:
            raise InvalidRequest(
                "suffix (fill-in-the-middle) is not supported by ctransformers", "suffix"
            )
        if isinstance(request.prompt, tuple):
            raise InvalidRequest("token-id prompts are not supported by ctransformers", "prompt")
        if not request.is_chat:
            return request.prompt
        template = self._template
        if template is None:
            raise InvalidRequest(
                f"model {self.model_id!r} has no chat template: set chat_template in its options",
                "messages",
            )
        return await asyncio.to_thread(template.render, request.messages)

    async def _run_one(
        self, model: CtModel, request: GenerationRequest, text: str, progress: Progress | None
    ) -> AsyncIterator[GenerationEvent]:
        params = request.params
        tokens = await self._run(_start, model, text, self._add_bos)
        if progress is not None:
            progress.prompt_tokens = len(tokens)
        limit = self._n_ctx
        if len(tokens) >= limit or len(tokens) + (params.max_tokens or 0) > limit:
            raise ContextLengthExceeded(len(tokens), params.max_tokens, limit)
        if not tokens:
            raise InvalidRequest("the prompt is empty and this model adds no start token", "prompt")
        max_new = params.max_tokens if params.max_tokens is not None else limit - len(tokens)
        if max_new == 0:
            yield Finished("length", Usage(len(tokens), 0))
            return
        seed = (
            params.seed % SEED_MODULUS
            if params.seed is not None
            else secrets.randbelow(SEED_MODULUS)
        )
        history = list(tokens)
        utf8, stops = Utf8Stream(), StopMatcher(params.stop)
        produced = 0
        pending: int | None = None  # the last token, evaluated with the next step
        while produced < max_new:
            step_seed = (seed + produced * 7919) % SEED_MODULUS
            token, is_eos, piece_bytes, logprob = await self._run(
                _step, model, pending, history, params, step_seed, request.logprobs
            )
            if is_eos:
                tail, _ = stops.feed(utf8.flush())
                tail += stops.flush()
                if tail:
                    yield TextDelta(tail)
                yield Finished("stop", Usage(len(tokens), produced))
                return
            produced += 1
            self._generated += 1
            history.append(token)
            pending = token
            piece, stopped = stops.feed(utf8.feed(piece_bytes))
            lps = (logprob,) if logprob is not None else ()
            if piece or lps or not stopped:
                yield TextDelta(piece, (token,), lps)
            if stopped:
                yield Finished("stop", Usage(len(tokens), produced))
                return
        tail, stopped = stops.feed(utf8.flush())
        tail += "" if stopped else stops.flush()
        if tail:
            yield TextDelta(tail)
        yield Finished("stop" if stopped else "length", Usage(len(tokens), produced))

    # -- tokenizer ----------------------------------------------------------------

    def _loaded(self) -> CtModel:
        if self._model is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        return self._model

    async def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        model = self._loaded()
        return await self._run(model.tokenize, text, add_special and self._add_bos)

    async def detokenize(self, tokens: TokenIds[int]) -> str:
        pieces = await self.token_pieces(tokens)
        return b"".join(pieces).decode("utf-8", errors="replace")

    async def token_pieces(self, tokens: TokenIds[int]) -> list[bytes]:
        model = self._loaded()
        check_token_ids(tokens, model.n_vocab, "tokens")
        return await self._run(lambda: [model.piece(t) for t in tokens])

    def tokenizer_info(self) -> TokenizerInfo:
        model = self._loaded()
        return TokenizerInfo(
            bos_token=self._bos_text,
            eos_token=self._eos_text,
            add_bos_token=self._add_bos,
            chat_template=self._template_source,
            max_model_len=self._n_ctx,
            vocab_size=model.n_vocab,
        )


def _text_of(model: CtModel, token: int) -> str | None:
    return model.token_text(token) if 0 <= token < model.n_vocab else None


def _read_gguf(path: Path) -> GGUFSummary | None:
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            return None
    return read_gguf(path)


def _check_params(params: SamplingParams) -> None:
    """Refuse what ctransformers' sampler cannot do, naming the field."""
    if params.presence_penalty or params.frequency_penalty:
        field = "presence_penalty" if params.presence_penalty else "frequency_penalty"
        raise InvalidRequest(
            f"{field} is not supported by ctransformers; use repetition_penalty", field
        )
    if params.min_p:
        raise InvalidRequest("min_p is not supported by ctransformers", "min_p")
    if params.logit_bias:
        raise InvalidRequest("logit_bias is not supported by ctransformers", "logit_bias")


def _start(model: CtModel, text: str, add_bos: bool) -> list[int]:
    """On the model's thread: a fresh context with the prompt's tokens (not yet
    evaluated: the caller checks them against the context first)."""
    model.reset()
    return model.tokenize(text, add_bos)


def _step(
    model: CtModel,
    pending: int | None,
    history: list[int],
    params: SamplingParams,
    seed: int,
    n_logprobs: int | None,
) -> tuple[int, bool, bytes, TokenLogprob | None]:
    """On the model's thread: evaluate the prompt (first step) or the last token, then
    pick the next one: (token, whether it ends the text, its bytes, its log-prob)."""
    if pending is None:
        model.eval(history)
    else:
        model.eval([pending])
    logits = model.logits() if n_logprobs is not None else None
    token = model.sample(
        history[-REPEAT_WINDOW:],
        params.top_k,
        params.top_p,
        params.temperature,
        params.repeat_penalty,
        seed,
    )
    is_eos, piece = model.is_eos(token), model.piece(token)
    if logits is None:
        return token, is_eos, piece, None
    logprob = describe(model, logits, token, n_logprobs or 0)  # type: ignore[arg-type]
    return token, is_eos, piece, logprob
