"""A scripted OpenAI-compatible upstream on a real loopback socket, for fault injection.

Raw asyncio streams (not a web framework) so it can misbehave at the byte level: stall
after the headers, drop the connection mid-stream, send broken JSON. It runs its own
event loop in a thread, so synchronous tests and a gateway subprocess can both reach it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Writer = asyncio.StreamWriter
Reader = asyncio.StreamReader
TEXT_CHUNKS = ("Hello", ",", " world", "!")
PING_INTERVAL = 0.05  # hostile modes: seconds between two pings or two header bytes
FLOOD_BYTES = 256 * 1024 * 1024  # what the flooding modes try to send


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chunk(text: str, finish: str | None = None, chat: bool = False) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": "cmpl-fake", "object": obj, "created": 1, "model": "fake", "choices": [choice]}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeUpstream:
    """`mode` picks the behaviour of the next POSTs; `requests` records what came in."""

    mode: str = "ok"
    get_mode: str = "ok"  # "trickle": probes get headers that never end
    usage: bool = True
    requests: list[Received] = field(default_factory=list)
    disconnects: int = 0  # clients that closed a stalled stream
    # the "reply" mode: (status, content type, extra header lines, body)
    reply: tuple[int, str, str, bytes] = (200, "application/json", "", b"{}")
    raw: bytes = b""  # the "sse_raw" mode: what follows the SSE headers
    sent: int = 0  # body bytes the last flood handed to the socket
    floods_done: int = 0  # floods that ended (sent whole, or cut by the client)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None
    _release: asyncio.Event | None = None
    _writers: set[Writer] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def posts(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST"]

    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._release = asyncio.Event()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = sock.getsockname()[1]
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, sock=sock))
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None and self._release is not None
            self._release.set()
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop = None

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self._writers.add(writer)
        try:
            while True:  # keep-alive: serve requests until the client closes
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else None
                self.requests.append(Received(method, path, headers, body))
                if method == "GET" and self.get_mode == "trickle":
                    await self._mode_trickle_headers(writer, body, reader)
                    break
                if method == "GET":
                    await self._json(writer, 200, {"object": "list", "data": []})
                    continue
                handler: Callable[..., Any] = getattr(self, f"_mode_{self.mode}")
                if await handler(writer, body, reader):
                    continue
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    # -- responses ------------------------------------------------------------------

    async def _json(self, writer: Writer, status: int, payload: Any,
                    extra: str = "", raw: bytes | None = None) -> bool:
        body = raw if raw is not None else json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n".encode() + body
        )
        await writer.drain()
        return True

    async def _sse_head(self, writer: Writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"connection: close\r\n\r\n")
        await writer.drain()

    async def _mode_ok(self, writer: Writer, body: Any, reader: Reader) -> bool:
        is_chat = "messages" in body
        await self._sse_head(writer)
        for text in TEXT_CHUNKS:
            writer.write(sse(chunk(text, chat=is_chat)))
        writer.write(sse(chunk("", "stop", chat=is_chat)))
        if self.usage and body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
            writer.write(sse({**chunk(""), "choices": [], "usage": usage}))
        writer.write(sse("[DONE]"))
        await writer.drain()
        return False

    async def _mode_stall(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        assert self._release is not None
        await self._release.wait()
        return False

    async def _mode_stall_mid(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        writer.write(sse(chunk("Hello")))
        await writer.drain()
        assert self._release is not None
        released = asyncio.ensure_future(self._release.wait())
        eof = asyncio.ensure_future(reader.read())
        await asyncio.wait({released, eof}, return_when=asyncio.FIRST_COMPLETED)
        if eof.done():
            self.disconnects += 1
        released.cancel()
        eof.cancel()
        return False

    async def _mode_die_mid(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        writer.write(sse(chunk("Hello")) + sse(chunk(",")))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # a crash: no [DONE], no clean close
        return False

    async def _mode_die_before(self, writer: Writer, body: Any, reader: Reader) -> bool:
        writer.transport.abort()
        return False

    async def _mode_malformed(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        writer.write(b"data: {\"choices\": [{\"text\": \"Hel\n\n")
        await writer.drain()
        return False

    async def _mode_malformed_body(self, writer: Writer, body: Any, reader: Reader) -> bool:
        return await self._json(writer, 200, None, raw=b"<html>not json")

    async def _mode_rate_limited(self, writer: Writer, body: Any, reader: Reader) -> bool:
        error = {"error": {"message": "Rate limit reached for requests", "type": "requests",
                           "param": None, "code": "rate_limit_exceeded"}}
        return await self._json(writer, 429, error, "retry-after: 7\r\n")

    async def _mode_llamacpp_context(self, writer: Writer, body: Any, reader: Reader) -> bool:
        error = {"error": {"code": 400, "type": "exceed_context_size_error",
                           "message": "the request exceeds the available context size",
                           "n_prompt_tokens": 9000, "n_ctx": 4096}}
        return await self._json(writer, 400, error)

    async def _mode_vllm_flat(self, writer: Writer, body: Any, reader: Reader) -> bool:
        error = {"object": "error", "message": "temperature must be non-negative",
                 "type": "BadRequestError", "param": None, "code": 400}
        return await self._json(writer, 400, error)

    async def _mode_unavailable(self, writer: Writer, body: Any, reader: Reader) -> bool:
        return await self._json(writer, 503, None, raw=b"Service Unavailable")

    # -- hostile modes ----------------------------------------------------------------

    async def _until_gone(self, writer: Writer, reader: Reader, what: bytes) -> None:
        """Write `what` every PING_INTERVAL until the client leaves (or stop())."""
        assert self._release is not None
        eof = asyncio.ensure_future(reader.read())
        try:
            while not eof.done() and not self._release.is_set():
                writer.write(what)
                await writer.drain()
                await asyncio.wait({eof}, timeout=PING_INTERVAL)
        finally:
            eof.cancel()

    async def _mode_ping_forever(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        await self._until_gone(writer, reader, b": ping\n\n")
        return False

    async def _mode_hello_then_ping(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        writer.write(sse(chunk("Hello")))
        await self._until_gone(writer, reader, b": ping\n\n")
        return False

    async def _mode_trickle_headers(self, writer: Writer, body: Any, reader: Reader) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nx-slow: ")
        await self._until_gone(writer, reader, b"z")
        return False

    async def _flood(self, writer: Writer, head: bytes) -> None:
        piece = b"a" * (1024 * 1024)
        self.sent = 0
        try:
            writer.write(head)
            while self.sent < FLOOD_BYTES:
                writer.write(piece)
                await writer.drain()
                self.sent += len(piece)
        finally:
            self.floods_done += 1

    async def _mode_flood_body(self, writer: Writer, body: Any, reader: Reader) -> bool:
        """A non-SSE body that never ends (no content-length, read until close)."""
        await self._flood(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                  b"connection: close\r\n\r\n{\"choices\": [{\"text\": \"")
        return False

    async def _mode_flood_line(self, writer: Writer, body: Any, reader: Reader) -> bool:
        """An SSE `data:` line that never ends."""
        await self._sse_head(writer)
        await self._flood(writer, b'data: {"choices": [{"text": "')
        return False

    async def _mode_declared_huge(self, writer: Writer, body: Any, reader: Reader) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 300000000\r\n\r\n{\"choices\": ")
        await self._until_gone(writer, reader, b" ")
        return False

    async def _mode_reply(self, writer: Writer, body: Any, reader: Reader) -> bool:
        status, content_type, extra, raw = self.reply
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                     f"content-length: {len(raw)}\r\n{extra}\r\n".encode() + raw)
        await writer.drain()
        return True

    async def _mode_sse_raw(self, writer: Writer, body: Any, reader: Reader) -> bool:
        await self._sse_head(writer)
        writer.write(self.raw)
        await writer.drain()
        return False
