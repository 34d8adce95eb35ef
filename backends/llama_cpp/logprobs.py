"""Log-probabilities from a logits row: the chosen token's and the top alternatives.

Tokens are shown by their text with special tokens written out ("<|im_end|>", not ""),
so that every entry names a token and an end-of-text token can be listed."""

from __future__ import annotations

import numpy as np

from backends.base import TokenLogprob
from backends.llama_cpp.native import Model

EXTRA_CANDIDATES = 8  # looked at beyond `n_top`, for texts that several tokens share


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = float(logits.max())
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum())


def token_text(model: Model, token: int) -> str:
    return model.token_text(token, special=True)


def top_alternatives(model: Model, lp: np.ndarray, n_top: int) -> tuple[tuple[str, float], ...]:
    """The `n_top` most likely distinct token texts, most likely first.

    Different tokens can share a text: every byte piece of a split UTF-8 character
    reads "\\ufffd" (265 such tokens in SmolLM2's vocabulary). The legacy `top_logprobs`
    is an object keyed by text, so the more likely token of such a pair keeps the key
    and the next candidates fill the place: a client always gets `n_top` keys."""
    if n_top <= 0:
        return ()
    vocab = lp.shape[0]
    k = min(vocab, n_top + EXTRA_CANDIDATES)
    while True:
        candidates = np.argpartition(-lp, k - 1)[:k] if k < vocab else np.arange(vocab)
        candidates = candidates[np.argsort(-lp[candidates], kind="stable")]
        best: dict[str, float] = {}
        for t in candidates:
            best.setdefault(token_text(model, int(t)), float(lp[t]))
            if len(best) == n_top:
                return tuple(best.items())
        if k >= vocab:
            return tuple(best.items())
        k = min(vocab, k * 8)


def describe(model: Model, logits: np.ndarray, token: int, n_top: int) -> TokenLogprob:
    """`token`'s log-probability under `logits`, and the `n_top` most likely tokens."""
    lp = log_softmax(logits.astype(np.float64, copy=False))
    top = top_alternatives(model, lp, n_top)
    return TokenLogprob(token_text(model, token), float(lp[token]), top)
