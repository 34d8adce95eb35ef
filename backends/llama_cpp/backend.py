"""The `llama_cpp` backend: GGUF models through llama-cpp-python, on CPU, CUDA or Metal."""

from __future__ import annotations

import asyncio
import collections.abc
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

import structlog

from backends.base import (
    Admission,
    Backend,
    Capabilities,
    Finished,
    GenerationEvent,
    GenerationRequest,
    Health,
    ModelInfo,
    TextDelta,
    TokenizerInfo,
    Usage,
)
from backends.errors import BackendError, ConfigError, ContextLengthExceeded, check_token_ids
from backends.llama_cpp import native, structured
from backends.llama_cpp.admission import EngineAdmission
from backends.llama_cpp.chat_template import ChatTemplate
from backends.llama_cpp.engine import Engine
from backends.llama_cpp.grammar import GrammarCache
from backends.llama_cpp.options import LlamaCppOptions, parse_options
from backends.llama_cpp.preflight import preflight
from backends.llama_cpp.prompts import build_prompt, tokens_at_least
from backends.llama_cpp.sequence import Sequence, Ticket
from backends.llama_cpp.source import resolve_model_file
from backends.llama_cpp.template_guard import RenderLimits

log = structlog.get_logger("backends.llama_cpp")
TokenIds = collections.abc.Sequence[int]  # (engine.Sequence is a generation)

REBUILD_HINT = {
    "cuda": "CMAKE_ARGS='-DGGML_CUDA=on'",
    "metal": "CMAKE_ARGS='-DGGML_METAL=on'",
}


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def __init__(self, model_id: str, opts: LlamaCppOptions, model_file: Path) -> None:
        self.model_id = model_id
        self.opts = opts
        self.model_file = model_file
        self.n_gpu_layers = gpu_layers_for(opts)
        self._model: native.Model | None = None
        self._ctx: native.Context | None = None
        self._engine: Engine | None = None
        self._template: ChatTemplate | None = None
        self._template_source: str | None = None
        self._details: dict[str, Any] = {"file": model_file.name}
        self._grammars = GrammarCache()

    @classmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        opts = parse_options(options, base_dir)
        model_file = resolve_model_file(opts)
        preflight(model_file, opts)  # before llama.cpp ever reads the file
        return cls(model_id, opts, model_file)

    # -- lifecycle ----------------------------------------------------------------

    async def load(self) -> None:
        await asyncio.to_thread(self._load_blocking)

    def _load_blocking(self) -> None:
        started = time.perf_counter()
        model = native.Model(self.model_file, self.n_gpu_layers)
        model.max_token_bytes()  # computed once here, off the event loop
        n_ctx = self.opts.n_ctx
        if model.n_ctx_train and n_ctx > model.n_ctx_train:
            log.warning(
                "n_ctx exceeds the model's training context; capping",
                n_ctx=n_ctx,
                n_ctx_train=model.n_ctx_train,
            )
            n_ctx = model.n_ctx_train
        try:
            ctx = native.Context(
                model,
                self.opts.parallel,
                n_ctx,
                self.opts.n_batch,
                self.opts.effective_threads,
                kv_unified=not self.opts.deterministic,
                flash_attn=self.opts.flash_attn,
            )
        except BackendError:
            model.close()
            raise
        self._model, self._ctx, self._n_ctx = model, ctx, n_ctx
        source = self.opts.chat_template or model.chat_template()
        self._template_source = source or None
        if source:
            self._template = ChatTemplate(
                source,
                model.token_text(model.bos) if model.bos >= 0 else "",
                model.token_text(model.eos) if model.eos >= 0 else "",
                RenderLimits(self.opts.template_timeout, self.opts.template_max_chars),
            )
        self._engine = Engine(model, ctx, n_ctx, self.opts.max_queue)
        self._engine.start()
        kv_bytes = kv_cache_bytes(model, n_ctx * self.opts.parallel)
        self._details.update(
            size_bytes=self.model_file.stat().st_size,
            n_ctx=n_ctx,
            parallel=self.opts.parallel,
            kv_cache_bytes=kv_bytes,
            n_gpu_layers=self.n_gpu_layers,
            flash_attn=self.opts.flash_attn,
            deterministic=self.opts.deterministic,
            chat_template="config"
            if self.opts.chat_template
            else ("gguf" if model.chat_template() else None),
            fim=model.fim_tokens() is not None,
        )
        log.info(
            "model loaded",
            model=self.model_id,
            file=str(self.model_file),
            size_mib=round(self.model_file.stat().st_size / 2**20, 1),
            load_seconds=round(time.perf_counter() - started, 2),
            n_ctx=n_ctx,
            parallel=self.opts.parallel,
            kv_cache_mib=round(kv_bytes / 2**20, 1) if kv_bytes else None,
            n_gpu_layers=self.n_gpu_layers,
        )

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    # -- description --------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        model = self._model
        return Capabilities(
            streaming=True,
            token_prompts=True,
            logprobs=True,
            echo=True,
            suffix=model is not None and model.fim_tokens() is not None,
            chat_template=self._template is not None,
            max_context=getattr(self, "_n_ctx", self.opts.n_ctx),
            n_vocab=model.n_vocab if model is not None else None,
            features=frozenset({"response_format", "tools", "fim_context"}),
        )

    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, self.name, self.capabilities, dict(self._details))

    def stats(self) -> Mapping[str, Any]:
        return self._engine.stats() if self._engine is not None else {}

    def health(self) -> Health:
        engine = self._engine
        if engine is not None and engine.failure is not None:
            return Health("failed", engine.failure)
        return Health()

    # -- generation ---------------------------------------------------------------

    def admit(self, count: int) -> Admission:
        engine = self._engine
        if engine is None:
            return Admission(self)  # generate says that the model is not loaded
        return EngineAdmission(self, engine, engine.reserve(count), self._generate)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self._generate(request)

    async def _generate(
        self,
        request: GenerationRequest,
        ticket: Ticket | None = None,
        on_prompt: collections.abc.Callable[[int], None] | None = None,
        on_sequence: collections.abc.Callable[[Sequence], None] | None = None,
    ) -> AsyncIterator[GenerationEvent]:
        engine, model = self._engine, self._model
        if engine is None or model is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        # Structured output and tools: the grammar, and the tools prompt (a 400 for a
        # schema outside the supported subset), before anything is queued.
        native = self._template is not None and self._template.supports_tools
        if request.tools or request.constraint is not None or request.messages:
            plan = await asyncio.to_thread(
                structured.plan, request, self._grammars, model.vocab, native
            )
        else:  # a plain completion: nothing to plan, and no thread hop on the way
            plan = structured.Plan(request)
        request = plan.request
        # Text that surely needs more tokens than the context holds is refused before it
        # is tokenised: llama.cpp's special-token pass is quadratic in the markup.
        at_least = tokens_at_least(model, request)
        wanted = at_least + (request.params.max_tokens or 0)
        if at_least and (at_least >= self._n_ctx or wanted > self._n_ctx):
            raise ContextLengthExceeded(
                at_least, request.params.max_tokens, self._n_ctx, at_least=True
            )
        # Rendering and tokenising grow with the prompt, and llama.cpp's special-token
        # pass grows with the square of the markup in it (each match walks its
        # fragment list from the head): never on the event loop.
        prompt = await asyncio.to_thread(
            build_prompt,
            model,
            request,
            self._template,
            self.model_id,
            self._prompt_room(request),
        )
        tokens, params = prompt.tokens, request.params
        if on_prompt is not None:
            on_prompt(len(tokens))
        limit = self._n_ctx
        if len(tokens) + (params.max_tokens or 0) > limit or len(tokens) >= limit:
            raise ContextLengthExceeded(len(tokens), params.max_tokens, limit)
        if params.max_tokens == 0 and not (request.echo and request.logprobs is not None):
            if request.echo:
                yield TextDelta(prompt.echo_text, tuple(tokens[prompt.echo_from :]), is_prompt=True)
            yield Finished("length", Usage(len(tokens), 0))
            return
        max_new = params.max_tokens if params.max_tokens is not None else limit - len(tokens)
        seq = Sequence(
            prompt=tokens,
            params=params,
            max_new_tokens=max_new,
            loop=asyncio.get_running_loop(),
            request_id=request.request_id,
            logprobs=request.logprobs,
            echo=request.echo,
            echo_text=prompt.echo_text,
            echo_from=prompt.echo_from,
            grammar=plan.grammar,
        )
        if on_sequence is not None:
            on_sequence(seq)
        engine.submit(seq, ticket)
        finished = False
        calls = structured.collector(plan, request) if plan.tools else None
        try:
            while not finished:
                item = await seq.output.get()
                if isinstance(item, BaseException):
                    raise item
                finished = isinstance(item, Finished)
                for event in calls.feed(item) if calls is not None else (item,):
                    yield event
        finally:
            if not finished:
                engine.cancel(seq)

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The exact token ids a request puts before the model (for tests and tools)."""
        if self._model is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        room = self._prompt_room(request)
        return build_prompt(self._model, request, self._template, self.model_id, room).tokens

    def _prompt_room(self, request: GenerationRequest) -> int:
        """The tokens a prompt may take: the context less the tokens to generate (a
        quarter of it without a limit, and at least one), so that repository context
        for fill-in-the-middle is cut to leave that room."""
        wanted = request.params.max_tokens
        return self._n_ctx - max(1, self._n_ctx // 4 if wanted is None else wanted)

    # -- tokenizer ----------------------------------------------------------------

    def _loaded_model(self) -> native.Model:
        if self._model is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        return self._model

    async def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        model = self._loaded_model()
        return await asyncio.to_thread(model.tokenize, text, add_special, parse_special)

    async def detokenize(self, tokens: TokenIds) -> str:
        model = self._loaded_model()
        check_token_ids(tokens, model.n_vocab, "tokens")
        return await asyncio.to_thread(model.detokenize, tokens)

    async def token_pieces(self, tokens: TokenIds) -> list[bytes]:
        model = self._loaded_model()
        check_token_ids(tokens, model.n_vocab, "tokens")
        return await asyncio.to_thread(lambda: [model.piece(t, special=True) for t in tokens])

    def tokenizer_info(self) -> TokenizerInfo:
        model = self._loaded_model()

        def text(token: int) -> str | None:
            return model.token_text(token) if 0 <= token < model.n_vocab else None

        return TokenizerInfo(
            bos_token=text(model.bos),
            eos_token=text(model.eos),
            pad_token=text(model.pad),
            add_bos_token=model.add_bos,
            chat_template=self._template_source,
            max_model_len=self._n_ctx,
            vocab_size=model.n_vocab,
        )


def gpu_layers_for(opts: LlamaCppOptions) -> int:
    """Layers to offload; fails at startup when a GPU was asked for but not built in."""
    if opts.device == "cpu":
        return 0
    supported = native.gpu_offload_supported()
    if opts.device in REBUILD_HINT and not supported:
        raise ConfigError(
            f"device = {opts.device!r}, but this llama-cpp-python build has no GPU offload. "
            f"Rebuild it with {REBUILD_HINT[opts.device]}: for example "
            f"GATEWAY_ACCEL={opts.device} python3 .ci/dev.py serve, or "
            f"{REBUILD_HINT[opts.device]} pip install --force-reinstall --no-cache-dir "
            "llama-cpp-python",
            "device",
        )
    return opts.n_gpu_layers if supported else 0


def kv_cache_bytes(model: native.Model, n_tokens: int) -> int | None:
    """f16 K and V for every layer: what the context allocates for `n_tokens`."""
    arch = model.metadata("general.architecture")
    try:
        n_layer = int(model.metadata(f"{arch}.block_count") or 0)
        n_embd = int(model.metadata(f"{arch}.embedding_length") or 0)
        n_head = int(model.metadata(f"{arch}.attention.head_count") or 0)
        n_head_kv = int(model.metadata(f"{arch}.attention.head_count_kv") or n_head)
    except ValueError:
        return None
    if not (n_layer and n_embd and n_head):
        return None
    kv_dim = n_head_kv * (n_embd // n_head)
    return n_layer * n_tokens * kv_dim * 2 * 2
