"""llama.cpp server's generation requests: `POST /completion` (its native shape) and
`POST /infill` (fill-in-the-middle with repository context, as llama.vscode and
llama.vim send it), parsed into one neutral call each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from backends.base import Capabilities, GenerationRequest, SamplingParams
from gateway.errors import invalid
from gateway.generation import ChoiceOutcome, ChoiceStream
from gateway.limits import LimitsSettings
from gateway.llamacpp.stopping import stop_early
from gateway.openai import params as p
from gateway.openai.common import check_vocabulary
from gateway.openai.completions import parse_prompt
from gateway.openai.fields import Wanted, refuse_unsupported

# Fields llama.cpp's server documents that need something this gateway does not do
# (grammars are refused unless the model enforces structured output).
_REFUSED = {
    "n_probs": ("logprobs", "token probabilities"),
    "image_data": ("image_input", "image input"),
    "multimodal_data": ("image_input", "image input"),
    "lora": ("lora", "per-request LoRA adapters"),
    "grammar": ("grammar", "constrained decoding"),
    "json_schema": ("grammar", "constrained decoding"),
}


@dataclass
class NativeCall:
    """One generation in llama.cpp's native shape. `prompt` is the text before the
    cursor for /infill (input_prefix + prompt), with `suffix` and `context_files`."""

    model: str
    operation: str  # "completion" or "infill"
    prompt: str | tuple[int, ...]
    sampling: SamplingParams
    stream: bool
    suffix: str | None = None
    context_files: tuple[tuple[str, str], ...] = ()
    t_max_predict_ms: int = 0
    n_indent: int = 0
    response_fields: tuple[str, ...] = ()
    wanted: tuple[Wanted, ...] = ()
    user: str | None = None
    include_usage: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def per_prompt(self) -> int:
        return 1

    def check(self, caps: Capabilities) -> None:
        if self.operation == "infill" and not caps.suffix:
            raise invalid(
                f"Model '{self.model}' cannot fill in the middle: its GGUF declares no FIM "
                "prefix/suffix/middle tokens. Serve a code model that has them (the README's "
                "Editors section names one).",
                "input_suffix",
            )
        refuse_unsupported(self.wanted, caps, self.model)
        check_vocabulary(self.sampling, caps, self.model)
        if self.stream and not caps.streaming:
            raise invalid(f"Model '{self.model}' does not support streaming.", "stream")
        if not isinstance(self.prompt, str) and not caps.token_prompts:
            raise invalid(f"Model '{self.model}' does not accept prompts as token ids.", "prompt")

    def requests(self, request_id: str) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                prompt=self.prompt,
                params=self.sampling,
                request_id=f"{request_id}/0",
                suffix=self.suffix,
                context_files=self.context_files,
            )
        ]

    def select(self, outcomes: list[ChoiceOutcome]) -> list[ChoiceOutcome]:
        return outcomes

    def limit_streams(self, streams: list[ChoiceStream]) -> list[ChoiceStream]:
        """llama.cpp's `t_max_predict_ms` and `n_indent` (gateway.llamacpp.stopping.py):
        the generation stops as if its token limit had been reached."""
        if self.t_max_predict_ms <= 0 and self.n_indent <= 0:
            return streams
        seconds = self.t_max_predict_ms / 1000 if self.t_max_predict_ms > 0 else None
        return [stop_early(s, seconds, self.n_indent) for s in streams]


def _sampling(body: p.Body, limits: LimitsSettings) -> SamplingParams:
    """llama.cpp's names and defaults (temperature 0.8, top_k 40, top_p 0.95,
    min_p 0.05, n_predict -1: until the context is full or the model stops)."""
    n_predict = p.get_int(body, "n_predict", -1, low=-1, high=p.INT32_MAX)
    seed = p.get_int(body, "seed", None, low=-1, high=p.INT64[1])
    return SamplingParams(
        max_tokens=None if n_predict is None or n_predict < 0 else n_predict,
        temperature=p.get_float(body, "temperature", 0.8, 0.0, 2.0),
        top_p=p.get_float(body, "top_p", 0.95, 0.0, 1.0),
        top_k=p.get_int(body, "top_k", 40, low=0, high=p.INT32_MAX) or 0,
        min_p=p.get_float(body, "min_p", 0.05, 0.0, 1.0),
        presence_penalty=p.get_float(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=p.get_float(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repeat_penalty=p.get_float(body, "repeat_penalty", 1.0, 0.0, 10.0),
        seed=None if seed is None or seed < 0 else seed,  # -1: a random seed
        stop=p.get_stop(body, limits=limits),
    )


def _wanted(body: p.Body) -> tuple[Wanted, ...]:
    out = []
    for name, (feature, what) in _REFUSED.items():
        value = body.get(name)
        if value not in (None, 0, "", [], {}):
            out.append(Wanted(feature, name, what))
    return tuple(out)


def _response_fields(body: p.Body) -> tuple[str, ...]:
    value = body.get("response_fields")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise invalid("Invalid 'response_fields': expected an array of strings.", "response_fields")
    return tuple(value)


def _common(body: p.Body, limits: LimitsSettings, default_model: str) -> dict[str, object]:
    p.get_bool(body, "cache_prompt")  # accepted: validated, nothing to do
    return {
        "model": p.get_str(body, "model") or default_model,
        "sampling": _sampling(body, limits),
        "stream": p.get_bool(body, "stream"),
        "t_max_predict_ms": p.get_int(body, "t_max_predict_ms", 0, low=0, high=p.INT32_MAX) or 0,
        "response_fields": _response_fields(body),
        "wanted": _wanted(body),
    }


def parse_completion(body: p.Body, limits: LimitsSettings, default_model: str) -> NativeCall:
    """`POST /completion`: `prompt` is a string or token ids (one prompt)."""
    if body.get("prompt") is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt")
    prompts = parse_prompt(body["prompt"], limits)
    if len(prompts) != 1:
        raise invalid("Invalid 'prompt': /completion takes one prompt.", "prompt")
    prompt = prompts[0]
    if isinstance(prompt, str) and len(prompt) > limits.max_prompt_chars:
        raise _too_long(len(prompt), limits)
    return NativeCall(operation="completion", prompt=prompt, **_common(body, limits, default_model))  # type: ignore[arg-type]


def parse_infill(body: p.Body, limits: LimitsSettings, default_model: str) -> NativeCall:
    """`POST /infill`: the text before the cursor is `input_prefix` then `prompt`
    (llama.vscode sends the current line's start as `prompt`), after it `input_suffix`;
    `input_extra` is [{"filename", "text"}] chunks of other files."""
    prefix = p.get_str(body, "input_prefix", default="") or ""
    prompt = p.get_str(body, "prompt", default="") or ""
    suffix = p.get_str(body, "input_suffix", default="") or ""
    files = _input_extra(body.get("input_extra"))
    n_indent = p.get_int(body, "n_indent", 0, low=0, high=p.INT32_MAX) or 0
    chars = len(prefix) + len(prompt) + len(suffix) + sum(len(t) for _, t in files)
    if chars > limits.max_prompt_chars:
        raise _too_long(chars, limits)
    common = _common(body, limits, default_model)
    if files:  # laid out by the backend (GenerationRequest.context_files)
        what = Wanted("fim_context", "input_extra", "repository context for fill-in-the-middle")
        common["wanted"] = (*common["wanted"], what)  # type: ignore[misc]
    return NativeCall(
        operation="infill",
        prompt=prefix + prompt,
        suffix=suffix,
        context_files=files,
        n_indent=n_indent,
        **common,  # type: ignore[arg-type]
    )


def _input_extra(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    problem = 'Invalid \'input_extra\': expected an array of {"filename", "text"} objects.'
    if not isinstance(value, list):
        raise invalid(problem, "input_extra")
    out = []
    for chunk in value:
        if not isinstance(chunk, dict):
            raise invalid(problem, "input_extra")
        text, filename = chunk.get("text", ""), chunk.get("filename", "tmp")
        if not isinstance(text, str) or not isinstance(filename, str):
            raise invalid(problem, "input_extra")
        out.append((filename, text))
    return tuple(out)


def _too_long(chars: int, limits: LimitsSettings) -> Exception:
    return p.limit_exceeded(
        "prompt",
        "the prompt text has this many characters:",
        chars,
        limits.max_prompt_chars,
        "max_prompt_chars",
    )
