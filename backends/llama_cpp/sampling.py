"""Per-sequence sampling over llama.cpp's sampler chain: the request's parameters as a
chain, and a grammar the sampled tokens must follow (structured output)."""

from __future__ import annotations

import ctypes
import random
from collections.abc import Mapping

import llama_cpp
import numpy as np

from backends.base import SamplingParams
from backends.errors import BackendError
from backends.llama_cpp.native import Context, Model, logits_row


class Sampler:
    """A per-sequence sampler chain built from the request's parameters, and optionally
    a grammar the sampled tokens must follow (structured output)."""

    def __init__(self, model: Model, params: SamplingParams, grammar: str | None = None) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._ptr = llama_cpp.llama_sampler_chain_init(chain_params)
        self._grammar: GrammarSampler | None = None
        self._argmax_vocab = 0  # set when sampling is a plain argmax over this many
        add = lambda s: llama_cpp.llama_sampler_chain_add(self._ptr, s)  # noqa: E731
        if grammar is not None:
            try:
                self._grammar = GrammarSampler(model, grammar)
            except BackendError:
                self.close()
                raise
        if params.logit_bias:
            # Under a grammar a ban is a large finite penalty, not -inf: were every
            # token the grammar allows banned, llama.cpp would pick one it forbids and
            # abort the process; this way the least bad allowed token is picked.
            add(_logit_bias(model.n_vocab, params.logit_bias, exact_bans=grammar is None))
        if params.presence_penalty or params.frequency_penalty or params.repeat_penalty != 1.0:
            add(
                llama_cpp.llama_sampler_init_penalties(
                    model.n_vocab,
                    64,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
            # Greedy with nothing before it in the chain: the most likely token, read
            # straight from the logits row (llama.cpp's sampler would first copy the
            # whole vocabulary into a candidates array: 250,880 entries for BLOOM).
            plain = grammar is None and not params.logit_bias
            no_penalty = not (params.presence_penalty or params.frequency_penalty)
            if plain and no_penalty and params.repeat_penalty == 1.0:
                self._argmax_vocab = model.n_vocab
            return
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Context, batch_index: int) -> int:
        if self._argmax_vocab:
            # np.argmax, like llama.cpp's greedy sampler, takes the first of equal maxima
            return int(np.argmax(logits_row(ctx, batch_index, self._argmax_vocab)))
        if self._grammar is not None:
            return self._grammar.sample(self._ptr, ctx, batch_index)
        return int(llama_cpp.llama_sampler_sample(self._ptr, ctx.ptr, batch_index))

    def close(self) -> None:
        if self._grammar is not None:
            self._grammar.close()
            self._grammar = None
        if self._ptr:
            llama_cpp.llama_sampler_free(self._ptr)
            self._ptr = None


# llama_token_data as numpy lays it out, to fill a candidates array without a loop.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GrammarSampler:
    """llama.cpp's grammar sampler, used as llama.cpp's own common sampler uses it:
    sample with the chain first and check only the chosen token against the grammar;
    only when the grammar rejects it, mask the whole vocabulary with the grammar and
    sample again (the masking pass over every token is the costly part). The grammar
    allows the end-of-generation tokens only once the grammar is complete."""

    def __init__(self, model: Model, grammar: str) -> None:
        self._ptr = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
        if not self._ptr:
            raise BackendError("llama.cpp refused the output grammar")
        self.n_vocab = model.n_vocab
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._all = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self.full_passes = 0  # how often the whole vocabulary had to be masked

    def _candidates(self, data: np.ndarray) -> llama_cpp.llama_token_data_array:
        return llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=len(data),
            selected=-1,
            sorted=False,
        )

    def _pick(self, chain: llama_cpp.llama_sampler_p, logits: np.ndarray, masked: bool) -> int:
        data = self._all
        data["id"] = self._ids
        data["logit"] = logits
        data["p"] = 0.0
        cur = self._candidates(data)
        if masked:
            llama_cpp.llama_sampler_apply(self._ptr, ctypes.byref(cur))
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
        if not 0 <= cur.selected < cur.size:
            raise BackendError("llama.cpp's sampler selected no token")
        return int(cur.data[cur.selected].id)

    def _allows(self, token: int) -> bool:
        one = self._one
        one["id"], one["logit"], one["p"] = token, 1.0, 0.0
        llama_cpp.llama_sampler_apply(self._ptr, ctypes.byref(self._candidates(one)))
        return bool(np.isfinite(one["logit"][0]))

    def sample(self, chain: llama_cpp.llama_sampler_p, ctx: Context, batch_index: int) -> int:
        logits = logits_row(ctx, batch_index, self.n_vocab)
        token = self._pick(chain, logits, masked=False)
        if not self._allows(token):
            self.full_passes += 1
            token = self._pick(chain, logits, masked=True)
        llama_cpp.llama_sampler_accept(self._ptr, token)
        llama_cpp.llama_sampler_accept(chain, token)
        return token

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_sampler_free(self._ptr)
            self._ptr = None


def _logit_bias(
    n_vocab: int, bias: Mapping[int, float], exact_bans: bool = True
) -> llama_cpp.llama_sampler_p:
    arr = (llama_cpp.llama_logit_bias * len(bias))()
    for i, (token, value) in enumerate(bias.items()):
        arr[i].token = token
        # OpenAI: -100 bans a token, 100 forces it; -inf makes the ban exact.
        arr[i].bias = (float("-inf") if exact_bans else -1e9) if value <= -100 else value
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), arr)
