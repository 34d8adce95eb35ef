"""The wire between the gateway (parent) and a worker process (child).

One stream socket (a `socketpair`), both directions. Each message is a 4-byte
big-endian length and a pickle of a tuple `(kind, id, payload)`. Payloads are the
neutral dataclasses of `backends.base` (plain JSON-like fields) or plain values; errors
travel as `(class name, message, attributes)` and are rebuilt as the same
`backends.errors` class. Both ends are the same program, so pickle's trust model holds:
the socket is never exposed to anything but the two processes.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

from backends import errors

HEADER = struct.Struct(">I")
MAX_MESSAGE = 256 * 1024 * 1024

# parent -> child
LOAD = "load"  # (LOAD, 0, None) -> (LOADED, 0, (info, capabilities, tokenizer_info|error))
# (GENERATE, seq, (request, admission_id, count)) -> EVENT*, DONE | ERROR; the worker
# admits `count` sequences with the first one of an admission (admission_id None: none)
GENERATE = "gen"
CANCEL = "cancel"  # (CANCEL, seq, None): close that sequence's iterator
RELEASE = "release"  # (RELEASE, admission_id, None)
CALL = "call"  # (CALL, call_id, (method, args)) -> RESULT | ERROR  (tokenize, ...)
CLOSE = "close"  # (CLOSE, 0, None): aclose the backend and exit 0
# child -> parent
LOADED = "loaded"
EVENT = "event"  # (EVENT, seq, (event, admission snapshot or None))
DONE = "done"  # (DONE, seq, admission snapshot): the sequence ended after Finished
RESULT = "result"
ERROR = "error"  # (ERROR, seq_or_call_id, encoded error)
HEARTBEAT = "hb"  # (HEARTBEAT, 0, (health, stats)) every heartbeat interval

KNOWN_ERRORS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        errors.BackendError,
        errors.ConfigError,
        errors.InvalidRequest,
        errors.ContextLengthExceeded,
        errors.Overloaded,
        errors.UpstreamError,
    )
}


def encode_error(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """A backend error as data, as its nearest `backends.errors` class (a backend's own
    subclass of InvalidRequest stays a 400); anything else becomes a BackendError naming
    only its type (its text may hold a path)."""
    for cls in type(exc).__mro__:
        if KNOWN_ERRORS.get(cls.__name__) is cls:
            attrs = {k: v for k, v in vars(exc).items() if isinstance(v, str | int | float | None)}
            return cls.__name__, str(exc), attrs
    return "BackendError", f"the backend failed ({type(exc).__name__})", {}


def decode_error(data: tuple[str, str, dict[str, Any]]) -> BaseException:
    name, message, attrs = data
    cls = KNOWN_ERRORS.get(name, errors.BackendError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(attrs)
    return exc


def pack(kind: str, ident: int, payload: Any = None) -> bytes:
    body = pickle.dumps((kind, ident, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> tuple[str, int, Any]:
    """The next message; raises asyncio.IncompleteReadError at the end of the stream."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes on the worker wire")
    kind, ident, payload = pickle.loads(await reader.readexactly(size))
    return kind, ident, payload
