"""What the engine measures about its own steps: where a step's time goes
(`StepTiming`), how many passes llama.cpp makes over a batch (`micro_batches`), and what
batches of each size have cost (`BatchCosts`), which decides per step whether running
sequences are decoded together or one at a time."""

from __future__ import annotations


class BatchCosts:
    """Measured cost of decode-only batches by size, to decide per step whether the
    running sequences' next tokens go to llama.cpp as one batch or one at a time.

    On a GPU, or a CPU with threads to spare, a batch costs little more than one token,
    and batching always wins. On a CPU with one decode thread, the matrix products are
    compute-bound already at one token, and ggml's kernels for a few rows can be slower
    per row than its one-row kernel (measured on bloomz-560m's shape: a batch of 2
    took 3.2 times a single token). Each sequence has its own KV stream, so a token
    decoded alone is bit for bit the token it would have been in the batch: the choice
    changes speed only. The engine measures both ways as it runs (moving averages per
    batch size), tries the other way now and then as load changes, and splits only
    when one at a time is clearly faster."""

    ALPHA = 0.2  # weight of the newest measurement
    MARGIN = 0.9  # split only when one at a time costs under 90 % of the batch
    EXPLORE_EVERY = 32  # steps of a size between tries of the way not taken

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}  # decode-only batch size -> seconds
        self._since_try: dict[int, int] = {}

    def record(self, size: int, seconds: float) -> None:
        old = self._seconds.get(size)
        self._seconds[size] = seconds if old is None else old + self.ALPHA * (seconds - old)

    def estimate(self, size: int) -> float | None:
        return self._seconds.get(size)

    def split(self, size: int) -> bool:
        """Whether to decode `size` running sequences one at a time this step."""
        if size < 2:
            return False
        batch, single = self._seconds.get(size), self._seconds.get(1)
        if batch is None:
            return False  # measure the batch first
        if single is None:
            return True  # then one at a time
        better = size * single < self.MARGIN * batch
        count = self._since_try.get(size, 0) + 1
        self._since_try[size] = count
        if count >= self.EXPLORE_EVERY:  # refresh the estimate of the other way
            self._since_try[size] = 0
            return not better
        return better


class StepTiming:
    """Running sums over the engine's steps (read without the lock: a stats snapshot
    may be one step stale, never torn in a way that matters)."""

    def __init__(self) -> None:
        self.step_seconds = 0.0
        self.decode_seconds = 0.0
        self.tokens = 0
        self.micro_batches = 0

    def add(self, step: float, decode: float, tokens: int, micro: int) -> None:
        self.step_seconds += step
        self.decode_seconds += decode
        self.tokens += tokens
        self.micro_batches += micro

    def as_stats(self) -> dict[str, int]:
        return {
            "decoded_tokens": self.tokens,
            "micro_batches": self.micro_batches,
            "decode_ms": round(self.decode_seconds * 1000),
            "python_ms": round((self.step_seconds - self.decode_seconds) * 1000),
        }


def micro_batches(entries: list[tuple[int, int, int, bool]], n_ubatch: int, unified: bool) -> int:
    """How many passes llama.cpp makes over a batch (each reads all the weights).

    A unified cache cuts the batch into `n_ubatch`-token pieces. With one KV stream per
    sequence, llama.cpp (`split_equal`, sequential) takes, from the first unused
    token's sequence on, a run of consecutive sequence ids that all have tokens left,
    and the same number of tokens from each, until the shortest runs out: so every
    distinct length among the prompt chunks costs one more pass."""
    if not entries:
        return 0
    if unified:
        return -(-len(entries) // n_ubatch)
    left: dict[int, int] = {}
    for _token, _pos, seq, _logits in entries:
        left[seq] = left.get(seq, 0) + 1
    order = list(left)  # entries go in slot order, each sequence's tokens together
    passes = 0
    while True:
        start = next((i for i, s in enumerate(order) if left[s] > 0), None)
        if start is None:
            return passes
        group = [order[start]]
        for s in order[start + 1 :]:
            if left[s] == 0 or s != group[-1] + 1:
                break
            group.append(s)
        take = max(1, min(min(left[s] for s in group), n_ubatch // len(group)))
        for s in group:
            left[s] -= min(take, left[s])
        passes += 1
