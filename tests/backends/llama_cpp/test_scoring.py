"""Exact scoring with the llama_cpp backend on SmolLM2, in process: the end-of-text token
is listed, special tokens read as their text, top alternatives never collide, and echo
log-probs equal llama-cpp-python's own evaluation of the same tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from backends.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    TokenLogprob,
)
from backends.errors import ConfigError, InvalidRequest
from backends.llama_cpp import LlamaCppBackend
from backends.llama_cpp.engine import PROMPT_SCORE_CHUNK
from backends.llama_cpp.logprobs import describe
from backends.llama_cpp.native import Model

N_CTX = 512
THREADS = 1
# Long enough to span several of the engine's scoring chunks.
TEXT = (
    "The quick brown fox jumps over the lazy dog. " * 3
    + "Paris is the capital of France, and Berlin is the capital of Germany. " * 8
)
END = "<|im_end|>"  # SmolLM2's end-of-generation token (id 2)


def backend_for(path: Path, **options: object) -> LlamaCppBackend:
    opts = {"model_path": str(path), "n_ctx": N_CTX, "parallel": 2, "threads": THREADS}
    return LlamaCppBackend.from_config("m", {**opts, **options}, Path("."))


async def events(backend: LlamaCppBackend, request: GenerationRequest) -> list[GenerationEvent]:
    return [e async for e in backend.generate(request)]


def entries(evs: list[GenerationEvent]) -> tuple[list[TokenLogprob], list[TokenLogprob]]:
    """(prompt entries, generated entries)."""
    prompt = [lp for e in evs if isinstance(e, TextDelta) and e.is_prompt for lp in e.logprobs]
    out = [lp for e in evs if isinstance(e, TextDelta) and not e.is_prompt for lp in e.logprobs]
    return prompt, out


def test_end_of_text_token_is_listed_scored_and_counted(smollm2_path: Path) -> None:
    """lm-evaluation-harness's request (max_tokens 1, echo, logprobs 1) when the one
    sampled token ends the text: prompt tokens + 1 entries, the last one the end token,
    its text not output, counted in completion_tokens, finish_reason stop."""

    async def main() -> None:
        async with backend_for(smollm2_path) as backend:
            eos = (await backend.tokenize(END))[0]
            params = SamplingParams(max_tokens=1, temperature=0, logit_bias={eos: 100})
            request = GenerationRequest("The capital of France is", params, logprobs=1, echo=True)
            evs = await events(backend, request)
            n_prompt = len(await backend.tokenize("The capital of France is"))
        prompt, generated = entries(evs)
        finished = evs[-1]
        assert isinstance(finished, Finished)
        assert len(prompt) == n_prompt and len(prompt) + len(generated) == n_prompt + 1
        end = generated[0]
        assert end.token == END and end.is_end
        # the model's own log-probability (the bias only chose it), and a real top entry
        assert end.logprob is not None and end.logprob < -1
        assert len(end.top) == 1 and end.top[0][1] > end.logprob
        assert "".join(e.text for e in evs if isinstance(e, TextDelta) and not e.is_prompt) == ""
        assert finished.finish_reason == "stop"
        assert finished.usage.completion_tokens == 1
        assert not any(lp.is_end for lp in prompt)

    asyncio.run(main())


def test_special_tokens_read_as_their_text(smollm2_path: Path) -> None:
    text = (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        "Hello! How can I help you today?<|im_end|>"
    )

    async def main() -> list[TokenLogprob]:
        async with backend_for(smollm2_path) as backend:
            params = SamplingParams(max_tokens=0)
            request = GenerationRequest(text, params, logprobs=5, echo=True)
            return entries(await events(backend, request))[0]

    prompt = asyncio.run(main())
    tokens = [lp.token for lp in prompt]
    assert tokens.count("<|im_start|>") == 2 and tokens.count(END) == 2
    assert "".join(tokens) == text  # offsets into the echoed text line up
    assert all(t for t in tokens)
    for lp in prompt[1:]:
        assert len(lp.top) == 5 and all(t for t, _ in lp.top)
    # After the assistant's answer, its end is among the likeliest next tokens.
    assert tokens[-1] == END and END in dict(prompt[-1].top)


def test_top_logprobs_keep_one_key_per_text(smollm2_path: Path) -> None:
    """Different tokens with the same text (byte pieces that each read "\\ufffd") must not
    collide: the likelier keeps the key, the next candidates fill up to `n_top`."""
    model = Model(smollm2_path, 0)
    try:
        replacement = [t for t in range(model.n_vocab) if model.token_text(t) == "\ufffd"][:3]
        assert len(replacement) == 3
        logits = np.zeros(model.n_vocab, dtype=np.float32)
        logits[replacement] = [9.0, 8.5, 8.0]  # the three likeliest tokens share a text
        others = [17, 18, 19, 20]  # "!", '"', "#", "$"
        logits[others] = [7.0, 6.0, 5.0, 4.0]
        entry = describe(model, logits, others[0], 5)
    finally:
        model.close()
    keys = [t for t, _ in entry.top]
    assert keys == ["\ufffd", "!", '"', "#", "$"]
    lp = dict(entry.top)
    assert lp["\ufffd"] > lp["!"] > lp['"']  # the likeliest of the three kept its value


@pytest.mark.parametrize("flash_attn", ["off", "on"])
def test_echo_logprobs_equal_llama_cpp_python(smollm2_path: Path, flash_attn: str) -> None:
    """Continuation log-likelihoods through echo + logprobs equal llama-cpp-python's
    `Llama(logits_all=True)` evaluation of the same tokens with the same context size and
    attention kernel. With flash attention on, llama.cpp's CPU result depends on how the
    prompt is cut into batches, so the reference uses the engine's scoring chunk."""

    async def through_gateway() -> tuple[list[int], list[float]]:
        async with backend_for(smollm2_path, flash_attn=flash_attn) as backend:
            tokens = await backend.tokenize(TEXT)
            params = SamplingParams(max_tokens=0)
            request = GenerationRequest(tuple(tokens), params, logprobs=0, echo=True)
            prompt, _ = entries(await events(backend, request))
        assert prompt[0].logprob is None
        return tokens, [lp.logprob for lp in prompt[1:] if lp.logprob is not None]

    tokens, ours = asyncio.run(through_gateway())
    assert len(tokens) > 2 * PROMPT_SCORE_CHUNK and len(ours) == len(tokens) - 1
    reference = llama_cpp_logprobs(smollm2_path, tokens, flash_attn == "on")
    assert np.max(np.abs(np.array(ours) - reference)) <= 1e-4


def llama_cpp_logprobs(path: Path, tokens: list[int], flash_attn: bool) -> np.ndarray:
    """log P(token i | tokens before it) for i >= 1, from llama-cpp-python's high-level API."""
    llm = llama_cpp.Llama(
        str(path),
        n_ctx=N_CTX,
        n_batch=PROMPT_SCORE_CHUNK,
        n_ubatch=PROMPT_SCORE_CHUNK,
        n_threads=THREADS,
        logits_all=True,
        flash_attn=flash_attn,
        verbose=False,
    )
    try:
        llm.eval(tokens)
        scores = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    top = scores.max(axis=1, keepdims=True)
    log_probs = scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))
    return np.array([log_probs[i - 1, tokens[i]] for i in range(1, len(tokens))])


def test_flash_attn_option_reaches_llama_cpp(smollm2_path: Path) -> None:
    """ "on" and "off" run different attention kernels: the scores differ slightly (the
    README gives the size of the difference). Were the option ignored, they would not."""

    async def score(flash_attn: str) -> np.ndarray:
        async with backend_for(smollm2_path, flash_attn=flash_attn) as backend:
            assert backend.info().details["flash_attn"] == flash_attn
            request = GenerationRequest(TEXT, SamplingParams(max_tokens=0), logprobs=0, echo=True)
            prompt, _ = entries(await events(backend, request))
        return np.array([lp.logprob for lp in prompt[1:]], dtype=np.float64)

    on, off = asyncio.run(score("on")), asyncio.run(score("off"))
    difference = float(np.max(np.abs(on - off)))
    assert 0 < difference < 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), ("on", "on"), ("off", "off"), (True, "on"), (False, "off")],
)
def test_flash_attn_option_values(smollm2_path: Path, value: object, expected: str) -> None:
    assert backend_for(smollm2_path, flash_attn=value).opts.flash_attn == expected


@pytest.mark.parametrize("value", ["yes", 1, "", None])
def test_flash_attn_option_refuses_other_values(smollm2_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="flash_attn must be one of auto, on, off") as err:
        backend_for(smollm2_path, flash_attn=value)
    assert err.value.key == "flash_attn"


def test_tokenizer_methods(smollm2_path: Path) -> None:
    async def main() -> None:
        async with backend_for(smollm2_path) as backend:
            ids = await backend.tokenize("Hello<|im_end|> world")
            assert len(ids) == 3 and ids[1] == 2
            assert await backend.tokenize("Hello<|im_end|>", parse_special=False) != ids[:2]
            assert await backend.detokenize(ids) == "Hello<|im_end|> world"
            assert await backend.token_pieces(ids) == [b"Hello", END.encode(), b" world"]
            info = backend.tokenizer_info()
            assert (info.bos_token, info.eos_token) == ("<|im_start|>", END)
            assert info.max_model_len == N_CTX and info.vocab_size == 49152
            assert info.chat_template and "<|im_start|>" in info.chat_template
            for bad in ([49152], [-1]):
                with pytest.raises(InvalidRequest) as err:
                    await backend.detokenize(bad)
                assert err.value.param == "tokens"
                with pytest.raises(InvalidRequest):
                    await backend.token_pieces(bad)

    asyncio.run(main())
