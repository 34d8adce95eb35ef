"""The batching engine: many sequences share one model and one context.

A single thread owns the llama.cpp context. Each step it builds one batch holding
the next token of every running sequence plus, with what room is left, a chunk of
a waiting prompt, decodes it with one `llama_decode`, and samples each sequence that
produced a logits row with that sequence's own sampler chain. New requests join
between steps; a cancelled one leaves at the next step. llama.cpp releases the GIL
inside its native calls, so the event loop stays responsive while the thread decodes.

Results go back to the asyncio side through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import replace

import structlog

from backends.base import (
    Finished,
    FinishReason,
    TextDelta,
    TokenLogprob,
    Usage,
)
from backends.errors import BackendError, Overloaded
from backends.llama_cpp.logprobs import describe, token_text
from backends.llama_cpp.native import Context, Model, logits_row
from backends.llama_cpp.sampling import Sampler
from backends.llama_cpp.sequence import Outbox, Sequence, Ticket
from backends.llama_cpp.slots import best_slot, common_prefix
from backends.llama_cpp.steps import BatchCosts, StepTiming, micro_batches
from backends.text import StopMatcher

log = structlog.get_logger("backends.llama_cpp.engine")

PROMPT_SCORE_CHUNK = 64


class Engine:
    def __init__(self, model: Model, ctx: Context, n_ctx_seq: int, max_queue: int) -> None:
        self._model = model
        self._ctx = ctx
        self._n_ctx_seq = n_ctx_seq
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._slots: list[Sequence | None] = [None] * ctx.n_seq
        # Tokens whose KV each slot still holds, for prefix reuse, and when it was used.
        self._cached: list[list[int]] = [[] for _ in range(ctx.n_seq)]
        self._stopping = False
        self._reserved = 0  # room promised to tickets and not yet used by a sequence
        # Why the engine thread died, if it did: safe to show (no paths, no traceback).
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)
        self.steps = 0
        self.reused_tokens = 0
        # Where a step's time goes, summed over all steps: inside llama_decode, and in
        # Python around it (batch building, sampling, text, handing results over);
        # tokens decoded and the micro-batches llama.cpp cut them into.
        self.timing = StepTiming()
        self.costs = BatchCosts()
        self._outbox = Outbox()  # outputs of the last step, sent before the next decode

    # -- asyncio side -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def capacity(self) -> int:
        """Sequences the engine holds at once: one per slot, then `max_queue` waiting."""
        return len(self._slots) + self._max_queue

    def reserve(self, count: int) -> Ticket:
        """Promise room for `count` sequences, all or none, before any of them is
        tokenised. Counting here, under the lock, is what makes admission atomic: the
        engine thread moves sequences into slots later, so slots alone undercount."""
        with self._cond:
            self._check_open()
            self._check_room(count)
            self._reserved += count
            return Ticket(count)

    def release(self, ticket: Ticket) -> None:
        """Give back what a ticket's call did not submit."""
        with self._cond:
            self._reserved -= ticket.unused
            ticket.unused = 0

    def submit(self, seq: Sequence, ticket: Ticket | None = None) -> None:
        with self._cond:
            self._check_open()
            if ticket is not None and ticket.unused > 0:
                ticket.unused -= 1
                self._reserved -= 1
            else:
                self._check_room(1)
            seq.submitted_at = time.perf_counter()
            self._waiting.append(seq)
            self._cond.notify()

    def _check_open(self) -> None:
        if self.failure is not None:
            raise BackendError(self.failure)
        if self._stopping:
            raise BackendError("the model is shutting down")

    def _check_room(self, count: int) -> None:
        """Under the lock: raise Overloaded unless `count` more sequences fit."""
        if count > self.capacity:
            raise Overloaded(
                f"this request needs {count} sequences at once (n, best_of and prompt "
                f"lists multiply), but this model holds at most {self.capacity} "
                f"({len(self._slots)} running, {self._max_queue} queued); send fewer",
                retry_after=1.0,
            )
        running = sum(1 for s in self._slots if s is not None and not (s.done or s.cancelled))
        if running + len(self._waiting) + self._reserved + count > self.capacity:
            raise Overloaded(
                f"all {len(self._slots)} slots are busy and the queue of "
                f"{self._max_queue} is full; retry shortly",
                retry_after=1.0,
            )

    def cancel(self, seq: Sequence) -> None:
        with self._cond:
            seq.cancelled = True
            if seq in self._waiting:
                self._waiting.remove(seq)
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "slots": len(self._slots),
                "busy": sum(s is not None and not s.done for s in self._slots),
                "queued": len(self._waiting),
                "reserved": self._reserved,
                "steps": self.steps,
                "prefix_reused_tokens": self.reused_tokens,
                **self.timing.as_stats(),
            }

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # -- engine thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._admit():
                self._step()
        except BaseException as exc:  # never leave callers waiting forever
            log.exception("engine crashed")
            with self._cond:
                self.failure = (
                    f"its inference engine stopped after an internal error "
                    f"({type(exc).__name__}); restart the gateway"
                )
                self._stopping = True
                self._fail_all(BackendError(self.failure))

    def _admit(self) -> bool:
        """Drop cancelled sequences, move waiting ones into free slots, and block while
        there is nothing to do. Returns False when the engine should stop."""
        with self._cond:
            while True:
                for i, seq in enumerate(self._slots):
                    if seq is not None and (seq.cancelled or seq.done):
                        self._release(i)
                while self._waiting and None in self._slots:
                    seq = self._waiting.popleft()
                    self._place(seq, self._best_slot(seq.prompt))
                if self._stopping:
                    self._fail_all(BackendError("the model is shutting down"))
                    return False
                if any(s is not None for s in self._slots):
                    return True
                self._outbox.flush()  # nothing more to decode: send what is left now
                self._cond.wait()

    def _best_slot(self, prompt: list[int]) -> int:
        return best_slot([s is not None for s in self._slots], self._cached, prompt)

    def _place(self, seq: Sequence, slot: int) -> None:
        # Keep the KV of the shared prefix, but always decode at least the last prompt
        # token: its logits give the first generated token.
        reuse = min(common_prefix(self._cached[slot], seq.prompt), len(seq.prompt) - 1)
        if seq.scores_prompt:
            reuse = 0  # every prompt token's logits are needed
        self._ctx.forget(slot, from_pos=reuse)
        self._cached[slot] = []
        seq.slot = slot
        seq.queue_seconds = time.perf_counter() - seq.submitted_at
        seq.n_prefilled = seq.n_reused = reuse
        self.reused_tokens += reuse
        seq.sampler = Sampler(self._model, seq.params, seq.grammar)
        seq.stops = StopMatcher(seq.params.stop)
        self._slots[slot] = seq

    def _release(self, slot: int) -> None:
        seq = self._slots[slot]
        self._slots[slot] = None
        if seq is None:
            return
        # What is in the KV cache now: the prompt as far as it was decoded, then every
        # generated token but the last (sampled, never decoded).
        generated = seq.generated[: max(0, len(seq.generated) - 1)]
        self._cached[slot] = seq.prompt[: seq.n_prefilled] + (
            generated if seq.n_prefilled == len(seq.prompt) else []
        )
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def _step(self) -> None:
        step_started = time.perf_counter()
        running = sum(1 for s in self._slots if s is not None and s.n_prefilled == len(s.prompt))
        # Every running sequence gets its next token (n_batch >= parallel); prompt
        # chunks share what is left, so a long prompt never stalls running streams
        # for more than one chunk.
        budget = self._ctx.n_batch - running
        entries: list[tuple[int, int, int, bool]] = []
        sample_at: list[tuple[Sequence, int]] = []
        scored: list[tuple[Sequence, int, int]] = []  # (seq, batch index, prompt position)
        # Entries go in slot order: llama.cpp cuts a batch over separate KV streams into
        # one micro-batch per run of consecutive sequence ids, and every micro-batch
        # reads all the weights again.
        for seq in self._slots:
            if seq is None:
                continue
            if seq.n_prefilled == len(seq.prompt):
                sample_at.append((seq, len(entries)))
                entries.append((seq.last_token, seq.n_past - 1, seq.slot, True))
                continue
            if budget <= 0:
                continue
            start = seq.n_prefilled
            # Scoring every prompt token makes every entry an output row: keep the
            # chunks small so the logits buffer stays small.
            room = min(budget, PROMPT_SCORE_CHUNK) if seq.scores_prompt else budget
            end = min(len(seq.prompt), start + room)
            for pos in range(start, end):
                last = pos == len(seq.prompt) - 1
                if last:
                    sample_at.append((seq, len(entries)))
                elif seq.scores_prompt:
                    scored.append((seq, len(entries), pos))
                entries.append((seq.prompt[pos], pos, seq.slot, last or seq.scores_prompt))
            seq.n_prefilled = end
            budget -= end - start
        if not entries:
            self._outbox.flush()
            return
        one_by_one = len(scored) == 0 and len(entries) == len(sample_at) == running
        parts: list[tuple[list, list[tuple[Sequence, int]], list]] = [
            (entries, sample_at, scored)
        ]
        if one_by_one and self.costs.split(len(entries)):
            parts = [([e], [(seq, 0)], []) for e, (seq, _) in zip(entries, sample_at, strict=True)]
        decode_seconds = 0.0
        for part_entries, part_samples, part_scored in parts:
            self._outbox.flush()  # the last step's outputs, now that its bookkeeping is done
            started = time.perf_counter()
            self._ctx.decode(part_entries)
            took = time.perf_counter() - started
            decode_seconds += took
            if one_by_one:
                self.costs.record(len(part_entries), took)
            self._after_decode(part_samples, part_scored)
        self.steps += 1
        ended = time.perf_counter()
        micro = sum(
            micro_batches(e, self._ctx.n_batch, self._ctx.kv_unified) for e, _, _ in parts
        )
        self.timing.add(ended - step_started, decode_seconds, len(entries), micro)
        if ended - step_started > 5:
            log.warning(
                "slow engine step", seconds=round(ended - step_started, 2), tokens=len(entries)
            )

    def _after_decode(
        self, sample_at: list[tuple[Sequence, int]], scored: list[tuple[Sequence, int, int]]
    ) -> None:
        """Read what the last decode produced: prompt scores, then each sequence's next
        token (the logits rows are valid until the next decode)."""
        for seq, index, pos in scored:
            self._score_prompt_token(seq, index, pos + 1)
        for seq, index in sample_at:
            if seq.n_generated == 0 and not seq.cancelled:
                if seq.scores_prompt:
                    self._score_prompt_token(seq, index, len(seq.prompt))
                if seq.echo:
                    self._emit_echo(seq)
                if seq.max_new_tokens == 0:
                    self._finish(seq, "length", "")
                    continue
            assert seq.sampler is not None
            token = seq.sampler.sample(self._ctx, index)
            logprob = None
            if seq.logprobs is not None:
                row = logits_row(self._ctx, index, self._model.n_vocab)
                logprob = describe(self._model, row, token, seq.logprobs)
            self._advance(seq, token, logprob)

    def _score_prompt_token(self, seq: Sequence, index: int, target: int) -> None:
        """The row at `index` predicts prompt token `target` (or, past the prompt, the
        first generated one, which is scored when sampled)."""
        if target >= len(seq.prompt):
            return
        assert seq.logprobs is not None
        row = logits_row(self._ctx, index, self._model.n_vocab)
        seq.prompt_logprobs.append(describe(self._model, row, seq.prompt[target], seq.logprobs))

    def _emit_echo(self, seq: Sequence) -> None:
        tokens = seq.prompt[seq.echo_from :]
        logprobs: tuple[TokenLogprob, ...] = ()
        if seq.scores_prompt:
            # prompt_logprobs[k] scores prompt token k + 1; the first echoed token has
            # nothing before it to be scored against, as at OpenAI.
            first = TokenLogprob(token_text(self._model, tokens[0]), None) if tokens else None
            scored = seq.prompt_logprobs[seq.echo_from :]
            logprobs = tuple([first, *scored]) if first is not None else ()
        self._outbox.put(seq, TextDelta(seq.echo_text, tuple(tokens), logprobs, is_prompt=True))

    def _advance(self, seq: Sequence, token: int, logprob: TokenLogprob | None = None) -> None:
        if seq.cancelled:
            return
        seq.n_generated += 1
        seq.last_token = token
        seq.generated.append(token)
        if self._model.is_eog(token):
            # OpenAI's legacy shape: the end-of-text token is listed in the log-probs
            # and counted as a completion token, but its text is not output.
            ended = (replace(logprob, is_end=True),) if logprob is not None else ()
            self._finish(seq, "stop", self._drain(seq), (token,), ended)
            return
        assert seq.stops is not None
        text, stopped = seq.stops.feed(seq.utf8.feed(self._model.piece(token)))
        scores = (logprob,) if logprob is not None else ()
        if stopped:
            # A token whose text is all stop string is not part of the answer.
            kept = (token,) if text else ()
            self._finish(seq, "stop", text, kept, scores if text else ())
            return
        if seq.n_generated >= seq.max_new_tokens or seq.n_past >= self._n_ctx_seq:
            self._finish(seq, "length", text + self._drain(seq), (token,), scores)
            return
        self._outbox.put(seq, TextDelta(text, (token,), scores))

    @staticmethod
    def _drain(seq: Sequence) -> str:
        """Text still held back (a partial UTF-8 character or a possible stop string)."""
        assert seq.stops is not None
        text, stopped = seq.stops.feed(seq.utf8.flush())
        return text if stopped else text + seq.stops.flush()

    def _finish(
        self,
        seq: Sequence,
        reason: FinishReason,
        text: str,
        tokens: tuple[int, ...] = (),
        scores: tuple[TokenLogprob, ...] = (),
    ) -> None:
        if text or tokens:
            self._outbox.put(seq, TextDelta(text, tokens, scores))
        self._outbox.put(seq, Finished(reason, Usage(len(seq.prompt), seq.n_generated)))
        seq.done = True

    def _fail_all(self, exc: BaseException) -> None:
        self._outbox.flush()  # what was produced before the failure, in order
        for i, seq in enumerate(self._slots):
            if seq is not None:
                if not seq.done:
                    seq.emit(exc)
                self._release(i)
        while self._waiting:
            self._waiting.popleft().emit(exc)
