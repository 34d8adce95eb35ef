"""llama.cpp's stopping rules for editors: `t_max_predict_ms` (an editor asks for what
the model has written once a line is complete and the time is up, instead of waiting
for the full length) and `n_indent` (a completion ends where a line starts with less
indentation than the cursor's line, as the end of the block being completed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from backends.base import Finished, GenerationEvent, TextDelta, Usage
from gateway.generation import ChoiceStream


def stop_early(stream: ChoiceStream, seconds: float | None, n_indent: int) -> ChoiceStream:
    """The stream, ended with finish reason "length" as soon as either holds:
    `seconds` (if given) have passed since its first event and its text has a new line;
    a line after the first starts with fewer than `n_indent` spaces or tabs (the text
    is cut there, before that line's first other character, as llama.cpp cuts it).
    The generation is closed then (which frees its slot), also while it waits for
    its next token."""
    if isinstance(stream.first, Finished):
        return stream
    rest = _Closing(_limited(stream, seconds, n_indent), stream.rest)
    return ChoiceStream(stream.index, stream.first, rest, stream.tally)


class _Closing:
    """`events`, and closing it closes `source` too, also when `events` never started
    (an async generator closed before its first step runs none of its code)."""

    def __init__(
        self, events: AsyncGenerator[GenerationEvent, None], source: AsyncIterator[GenerationEvent]
    ) -> None:
        self.events = events
        self.source = source

    def __aiter__(self) -> _Closing:
        return self

    async def __anext__(self) -> GenerationEvent:
        return await anext(self.events)

    async def aclose(self) -> None:
        try:
            await self.events.aclose()
        finally:
            close = getattr(self.source, "aclose", None)
            if close is not None:
                await close()


def dedent_cut(text: str, n_indent: int, start: int = 0) -> int | None:
    """Where llama.cpp's `n_indent` rule cuts `text` (None: nowhere): at the first
    non-blank character of a line after the first (searched from the line that begins
    after offset `start`) that has fewer than `n_indent` spaces or tabs before it."""
    if n_indent <= 0:
        return None
    pos = text.find("\n", start)
    while pos >= 0:
        line = pos + 1
        end = line
        while end < len(text) and text[end] in " \t":
            end += 1
        if end < len(text) and text[end] != "\n" and end - line < n_indent:
            return end
        pos = text.find("\n", line)
    return None


async def _limited(
    stream: ChoiceStream, seconds: float | None, n_indent: int
) -> AsyncIterator[GenerationEvent]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds if seconds is not None else None
    first = stream.first
    text = first.text if isinstance(first, TextDelta) and not first.is_prompt else ""
    generated = len(first.token_ids) if isinstance(first, TextDelta) else 0
    source = stream.rest

    def finished() -> Finished:
        return Finished("length", Usage(_prompt_tokens(stream), generated))

    async with contextlib.aclosing(source):
        if text and dedent_cut(text, n_indent) is not None:
            # the first event is already sent as it is: the rule applies from the next
            yield finished()
            return
        while True:
            timed = deadline is not None and "\n" in text
            try:
                if timed:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(source)
                else:
                    event = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                yield finished()
                return
            if not isinstance(event, TextDelta) or event.is_prompt:
                yield event
                if isinstance(event, Finished):
                    return
                continue
            generated += len(event.token_ids)
            before = len(text)
            text += event.text
            cut = dedent_cut(text, n_indent, max(0, text.rfind("\n", 0, before)))
            if cut is not None:
                kept = event.text[: max(0, cut - before)]
                yield TextDelta(kept, event.token_ids, event.logprobs)
                yield finished()
                return
            yield event
            if deadline is not None and "\n" in text and loop.time() >= deadline:
                yield finished()
                return


def _prompt_tokens(stream: ChoiceStream) -> int:
    admission = stream.tally.admission if stream.tally is not None else None
    known = admission.prompt_tokens() if admission is not None else []
    value = known[stream.index] if stream.index < len(known) else None
    return value or 0
