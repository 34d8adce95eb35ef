"""The one interface every backend implements.

Backends know nothing of OpenAI's JSON. They receive a neutral, typed
`GenerationRequest` and yield neutral events; the gateway's wire layer turns those
into OpenAI responses or SSE chunks. Every value here is a frozen dataclass of plain
JSON-serialisable fields, so a backend could later run in another process without
changing this contract.

The shape follows httpx's `AsyncBaseTransport`: a handful of async methods,
`aclose()`, and use as an async context manager.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from backends.errors import InvalidRequest

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. Defaults are OpenAI's."""

    max_tokens: int | None = 16  # None: up to the context window
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off (extension)
    min_p: float = 0.0  # 0: off (extension)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0  # 1: off (extension)
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of one of the request's tools: `arguments` is a JSON object's text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str
    name: str | None = None
    # An assistant turn's calls, and for a `tool` message the call it answers.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """What the generated text must be: any JSON object (`json_object`), or JSON valid
    against `schema` (`json_schema`, a JSON Schema object). Backends that enforce it
    list "response_format" in `Capabilities.features`."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`none`: answer in text; `auto`: text or calls; `required`: at least one call;
    `function`: a call of the tool named `name`."""

    mode: Literal["none", "auto", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate.

    A completion has `prompt` (text or already-tokenised ids); a chat has `messages`
    instead, which the backend renders with its chat template (or forwards).
    `logprobs`: how many alternatives to report per token (None: no log-probs).
    `echo`: emit the prompt first (only when the backend declares `echo`).
    `suffix`: text after the insertion point, for fill-in-the-middle.
    `context_files`: (filename, text) chunks of other files for fill-in-the-middle,
    placed before the FIM prefix as the model's FIM format places them (the oldest
    dropped first when they do not fit the context).
    `constraint`: the shape the output must have (structured output).
    `tools` / `tool_choice` / `parallel_tool_calls`: functions a chat may call; calls
    come back in `Finished.tool_calls` (finish reason "tool_calls").
    """

    prompt: str | tuple[int, ...] = ""
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    messages: tuple[ChatMessage, ...] = ()
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    context_files: tuple[tuple[str, str], ...] = ()
    constraint: OutputConstraint | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's text and log-probability, with the most likely alternatives."""

    token: str
    logprob: float | None  # None for the first prompt token when echoing
    top: tuple[tuple[str, float], ...] = ()
    # The end-of-generation token that stopped the text: scored and counted as a
    # completion token, but its text is not part of the output.
    is_end: bool = False


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Newly generated text (possibly empty while a UTF-8 character or a possible
    stop string is held back) and the token ids that produced it. With `echo`, the
    first delta is the prompt itself, marked `is_prompt`."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    is_prompt: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """Always the last event of a generation. `tool_calls`: the calls the text made
    (then `finish_reason` is "tool_calls" and that text is not a message's content)."""

    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()


GenerationEvent = TextDelta | Finished


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend supports; the gateway checks requests against this before calling."""

    streaming: bool = True
    token_prompts: bool = False  # prompt given as token ids
    logprobs: bool = False
    echo: bool = False
    suffix: bool = False  # fill-in-the-middle
    chat_template: bool = False
    max_context: int | None = None
    n_vocab: int | None = None  # token ids (logit_bias keys, prompts) are below this
    # Request features beyond plain text generation that the backend honours, named as
    # the gateway's wire layer names them (`gateway.openai.fields`): "response_format",
    # "tools", "functions", "image_input", ... A request that asks for one not listed
    # here is refused with a 400 naming the field, never silently served without it.
    features: frozenset[str] = frozenset()


HealthState = Literal["ready", "unavailable", "failed"]


@dataclass(frozen=True, slots=True)
class Health:
    """Whether a loaded backend can serve now. `unavailable` may pass (a remote upstream
    with no healthy replica for the moment); `failed` will not (the engine died): its
    model answers 503 until the gateway is restarted. `reason` is shown to clients, so
    it must be safe to show (no paths, no tracebacks)."""

    state: HealthState = "ready"
    reason: str | None = None


class Admission:
    """One API call's claim on a backend for all of its sequences at once (`n`,
    `best_of`, prompt lists), made by `Backend.admit` before any work starts. The
    call starts its sequences through `generate` and calls `release` once they have
    all started, giving back what a sequence did not use (one that failed first).

    `prompt_tokens` is how many prompt tokens each started sequence put before the
    model, in the order `generate` was called (None while unknown): with the counts of
    the events seen, it accounts for calls that end early. This default claims
    nothing and knows nothing; a backend with a bounded queue overrides it."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self.backend.generate(request)

    def release(self) -> None:
        return None

    def prompt_tokens(self) -> list[int | None]:
        return []

    def queue_seconds(self) -> list[float | None]:
        """How long each started sequence waited for the backend to take it up (None
        while unknown); empty for a backend without a queue of its own."""
        return []


@dataclass(frozen=True, slots=True)
class TokenizerInfo:
    """What a client needs to count and build token ids as the model does (evaluation
    harnesses, for instance): the special tokens' texts, the chat template, the limits."""

    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    add_bos_token: bool = False  # whether tokenizing with special tokens adds the BOS
    chat_template: str | None = None
    max_model_len: int | None = None
    vocab_size: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the gateway reports about a loaded model."""

    id: str
    backend: str
    capabilities: Capabilities
    details: Mapping[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """A loaded model (or remote upstream) that can generate.

    Lifecycle: construct with `from_config` (cheap, validates options, may resolve or
    download files), then `await load()` (heavy: loads weights), then `generate()` any
    number of times concurrently, then `await aclose()`.
    """

    #: the name it is registered under in the `gateway.backends` entry-point group
    name: str = ""
    #: where it runs unless its [[models]] entry says `isolation`: "none" (in the
    #: gateway's process) or "process" (a supervised worker, `backends.worker`)
    default_isolation: str = "none"

    @classmethod
    @abc.abstractmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        """Validate `options` (the model's `[models.options]` table) and build the
        backend without loading it. Raise `backends.errors.ConfigError` naming the key.
        `base_dir` is the config file's folder, for relative paths."""

    @abc.abstractmethod
    async def load(self) -> None:
        """Load weights or connect. Raise `backends.errors.BackendError` on failure."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def info(self) -> ModelInfo:
        """Static facts about the model (file, context size, ...): they feed the
        response's `system_fingerprint`, so nothing here should change per request."""

    def stats(self) -> Mapping[str, Any]:
        """Live numbers for the status endpoint (queue length, busy slots, replicas)."""
        return {}

    def health(self) -> Health:
        """Whether the loaded backend can serve now (cheap: /ready asks on every call)."""
        return Health()

    def admit(self, count: int) -> Admission:
        """Reserve room for `count` sequences of one call, all or none, before any of
        them does work; raise `backends.errors.Overloaded` when they do not fit."""
        return Admission(self)

    # -- tokenizer (optional) -----------------------------------------------------
    # Backends that hold a tokenizer override these; the defaults refuse with a 400.
    # Implementations keep the work off the event loop (asyncio.to_thread).

    async def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        """`text`'s token ids: with `add_special`, the tokens the model adds around a
        prompt (a BOS); with `parse_special`, markup such as "<|im_end|>" becomes its
        special token. Raise `InvalidRequest` for what cannot be tokenized."""
        raise self._no_tokenizer()

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of `tokens`, special tokens written out. Raise `InvalidRequest`
        (param "tokens") for an id outside the vocabulary."""
        raise self._no_tokenizer()

    async def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        """Each token's own bytes (a piece of a UTF-8 character may be a lone byte)."""
        raise self._no_tokenizer()

    def tokenizer_info(self) -> TokenizerInfo:
        raise self._no_tokenizer()

    def _no_tokenizer(self) -> InvalidRequest:
        return InvalidRequest(
            f"Tokenization is not supported by the '{self.name}' backend.", "model"
        )

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream events for one sequence, ending with exactly one `Finished`.

        Errors that are the caller's fault (context length, unsupported parameter)
        must be raised before the first event. Closing the iterator early (the client
        went away) must stop the generation and free its resources promptly.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Free everything. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.load()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
