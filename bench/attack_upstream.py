"""A hostile OpenAI-compatible upstream for bench/attack.py, on loopback: answers
`GET /v1/models` like a healthy server (so health probes pass), and misbehaves on
generation requests according to the upstream model name the gateway sends:

    ping        SSE headers, then `: ping` comments forever, never a data event
    huge        a non-SSE 200 body of SIZE bytes
    endless     one `data:` line of SIZE bytes that never ends
    secret      400 with a plain-text body that leaks a password and a path
    badutf8     an SSE chunk that is not UTF-8
    usage-inf   an SSE chunk whose usage is 1e400
    retry-inf   429 with `Retry-After: inf`

    python -m bench.attack_upstream PORT SIZE
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n"
)
MODELS = json.dumps({"object": "list", "data": [{"id": "any", "object": "model"}]}).encode()
CHUNK = 1 << 20


def _response(status: str, body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n{extra}"
    return head.encode() + b"\r\n" + body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return lines[0], body


async def _misbehave(mode: str, size: int, writer: asyncio.StreamWriter) -> None:
    if mode == "ping":
        writer.write(SSE_HEADERS)
        while True:
            writer.write(b": ping\n\n")
            await writer.drain()
            await asyncio.sleep(0.5)
    elif mode in ("huge", "endless"):
        if mode == "huge":
            writer.write(
                f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-length: {size}\r\n\r\n".encode()
            )
        else:
            writer.write(SSE_HEADERS + b"data: ")
        sent = 0
        while sent < size:
            writer.write(b"x" * min(CHUNK, size - sent))
            sent += CHUNK
            await writer.drain()
    elif mode == "secret":
        body = b"db password=hunter2 at /srv/app/internal/app.py line 3"
        writer.write(_response("400 Bad Request", body, "text/plain"))
    elif mode == "badutf8":
        writer.write(
            SSE_HEADERS + b'data: {"id":"x","object":"text_completion","created":1,'
            b'"model":"m","choices":[{"text":"\xff\xfe","index":0,'
            b'"finish_reason":null}]}\n\n'
        )
    elif mode == "usage-inf":
        writer.write(
            SSE_HEADERS + b'data: {"id":"x","object":"text_completion","created":1,'
            b'"model":"m","choices":[],"usage":{"prompt_tokens":1e400,'
            b'"completion_tokens":1,"total_tokens":1}}\n\ndata: [DONE]\n\n'
        )
    elif mode == "retry-inf":
        body = json.dumps({"error": {"message": "busy", "type": "rate_limit_error"}}).encode()
        writer.write(_response("429 Too Many Requests", body, extra="retry-after: inf\r\n"))
    await writer.drain()


async def _serve(size: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while True:
            start, body = await _read_request(reader)
            if start.startswith("GET"):
                writer.write(_response("200 OK", MODELS))
                await writer.drain()
                continue
            mode = str(json.loads(body or b"{}").get("model", ""))
            await _misbehave(mode, size, writer)
            break
    writer.close()


async def main(port: int, size: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(size, r, w), "127.0.0.1", port, limit=1 << 20
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
