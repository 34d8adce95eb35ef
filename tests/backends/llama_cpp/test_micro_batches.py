"""How many passes llama.cpp makes over one engine batch (`micro_batches`), checked
against llama.cpp's own splitting rules, worked by hand from `llama_batch_allocr::
split_equal` (one KV stream per sequence) and `split_simple` (a unified cache)."""

from __future__ import annotations

import pytest

from backends.llama_cpp.steps import micro_batches


def batch(*counts: tuple[int, int]) -> list[tuple[int, int, int, bool]]:
    """Entries in slot order: (sequence id, tokens) pairs, each sequence's together."""
    return [(1, pos, seq, False) for seq, n in counts for pos in range(n)]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([], 0),
        ([(0, 1)], 1),
        ([(s, 1) for s in range(8)], 1),  # eight decode tokens: one pass
        ([(0, 1), (1, 1), (2, 30)], 2),  # decode tokens, then the rest of a prompt
        ([(0, 10), (1, 10), (2, 10)], 1),  # equal prompt chunks together
        ([(0, 10), (1, 20), (2, 30)], 3),  # every distinct length costs a pass
        ([(0, 1), (2, 1)], 2),  # a gap between ids breaks the run
        ([(0, 5), (1, 1), (2, 5)], 3),  # seq 1 runs out: 0 and 2 are not consecutive
        ([(0, 600)], 2),  # one prompt longer than n_ubatch
        ([(0, 300), (1, 300)], 2),  # 256 each fit, then the other 44 each
    ],
)
def test_per_sequence_streams(counts: list[tuple[int, int]], expected: int) -> None:
    assert micro_batches(batch(*counts), 512, unified=False) == expected


@pytest.mark.parametrize(("tokens", "expected"), [(1, 1), (512, 1), (513, 2), (1100, 3)])
def test_unified_cache(tokens: int, expected: int) -> None:
    entries = batch(*((s, tokens // 4) for s in range(4)), (4, tokens % 4))
    assert micro_batches(entries, 512, unified=True) == expected
