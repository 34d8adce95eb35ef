"""llama.cpp's `t_max_predict_ms`: an editor asks for whatever the model has written
once a line is complete and the time is up, instead of waiting for the full length."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from backends.base import Finished, GenerationEvent, TextDelta, Usage
from gateway.generation import ChoiceStream


def stop_after_new_line(stream: ChoiceStream, seconds: float) -> ChoiceStream:
    """The stream, ended with finish reason "length" as soon as both hold: `seconds`
    have passed since its first event and its text has a new line. The generation is
    closed then (which frees its slot), also while it waits for its next token."""
    return ChoiceStream(stream.index, stream.first, _limited(stream, seconds), stream.tally)


async def _limited(stream: ChoiceStream, seconds: float) -> AsyncIterator[GenerationEvent]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    new_line = isinstance(stream.first, TextDelta) and "\n" in stream.first.text
    generated = len(stream.first.token_ids) if isinstance(stream.first, TextDelta) else 0
    source = stream.rest
    async with contextlib.aclosing(source):
        while True:
            try:
                if new_line:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(source)
                else:
                    event = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                yield Finished("length", Usage(_prompt_tokens(stream), generated))
                return
            if isinstance(event, TextDelta):
                if not event.is_prompt:
                    generated += len(event.token_ids)
                new_line = new_line or "\n" in event.text
                yield event
                if new_line and loop.time() >= deadline:
                    yield Finished("length", Usage(_prompt_tokens(stream), generated))
                    return
                continue
            yield event
            return


def _prompt_tokens(stream: ChoiceStream) -> int:
    admission = stream.tally.admission if stream.tally is not None else None
    known = admission.prompt_tokens() if admission is not None else []
    value = known[stream.index] if stream.index < len(known) else None
    return value or 0
