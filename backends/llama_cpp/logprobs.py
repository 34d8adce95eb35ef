"""Log-probabilities from a logits row: the chosen token's and the top alternatives."""

from __future__ import annotations

import numpy as np

from backends.base import TokenLogprob
from backends.llama_cpp.native import Model


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = float(logits.max())
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum())


def token_text(model: Model, token: int) -> str:
    return model.piece(token).decode("utf-8", errors="replace")


def describe(model: Model, logits: np.ndarray, token: int, n_top: int) -> TokenLogprob:
    """`token`'s log-probability under `logits`, and the `n_top` most likely tokens."""
    lp = log_softmax(logits.astype(np.float64, copy=False))
    top: tuple[tuple[str, float], ...] = ()
    if n_top > 0:
        k = min(n_top, lp.shape[0])
        best = np.argpartition(-lp, k - 1)[:k]
        best = best[np.argsort(-lp[best])]
        top = tuple((token_text(model, int(t)), float(lp[t])) for t in best)
    return TokenLogprob(token_text(model, token), float(lp[token]), top)
