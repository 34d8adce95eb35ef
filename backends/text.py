"""Text helpers shared by engines that produce tokens one at a time."""

from __future__ import annotations

import codecs


class StopMatcher:
    """Finds stop strings in streamed text, even when one is split across tokens.

    `feed` returns the text that is safe to emit: anything that might be the start of
    a stop string is held back until the next token settles it. Stop strings are never
    part of the returned text.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text to emit, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:k]):
                    hold = k
                    break
        cut = len(buf) - hold
        self._pending = buf[cut:]
        return buf[:cut], False

    def flush(self) -> str:
        """Text held back when generation ends for another reason."""
        out, self._pending = self._pending, ""
        return out


class Utf8Stream:
    """Turns token byte pieces into text, holding back incomplete UTF-8 sequences."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
