"""Which free slot a new prompt goes to: where its prefix is already cached, or else
where it keeps the busy slots together."""

from __future__ import annotations

MIN_PREFIX_REUSE = 16  # shorter shared prefixes are chance, not worth a scattered slot


def best_slot(busy: list[bool], cached: list[list[int]], prompt: list[int]) -> int:
    """The free slot whose cached tokens share a long prefix with `prompt` (the editor
    pattern: the same file prefix again and again); otherwise the one that keeps the
    busy slots in the fewest runs of consecutive ids (each run costs a pass over the
    weights per step), the lowest first."""

    def runs_with(i: int) -> int:
        flags = busy.copy()
        flags[i] = True
        return sum(1 for k, b in enumerate(flags) if b and (k == 0 or not flags[k - 1]))

    def score(i: int) -> tuple[int, int, int]:
        reuse = common_prefix(cached[i], prompt)
        return (reuse if reuse >= MIN_PREFIX_REUSE else 0, -runs_with(i), -i)

    return max((i for i, b in enumerate(busy) if not b), key=score)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
