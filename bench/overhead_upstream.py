"""A minimal OpenAI-compatible upstream for overhead measurements: it answers every
`POST /v1/completions` (and chat) at once with the same streamed completion, so any
time a proxy adds in front of it is the proxy's own.

    python -m bench.overhead_upstream --port 9000 [--chunks 16]

Raw asyncio (uvloop when installed), HTTP/1.1 keep-alive, no framework.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog")


def completion_stream(chunks: int, chat: bool) -> bytes:
    created = int(time.time())
    events = []
    for i in range(chunks + 2):
        text = WORDS[i % len(WORDS)] if i < chunks else ""
        finish = "length" if i == chunks else None
        if chat:
            choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            kind = "text_completion"
        payload = {
            "id": "cmpl-bench",
            "object": kind,
            "created": created,
            "model": "fake",
            "choices": [choice],
        }
        if i == chunks + 1:
            payload["choices"] = []
            payload["usage"] = {
                "prompt_tokens": 5,
                "completion_tokens": chunks,
                "total_tokens": 5 + chunks,
            }
        events.append(f"data: {json.dumps(payload)}\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def serve(port: int, chunks: int) -> None:
    completions = response("200 OK", "text/event-stream", completion_stream(chunks, False))
    chats = response("200 OK", "text/event-stream", completion_stream(chunks, True))
    models = response(
        "200 OK",
        "application/json",
        json.dumps(
            {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]}
        ).encode(),
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                first, _, rest = head.partition(b"\r\n")
                length = 0
                for line in rest.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if first.startswith(b"GET"):
                    writer.write(models)
                elif b"/chat/" in first:
                    writer.write(chats)
                else:
                    writer.write(completions)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=16)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.chunks))


if __name__ == "__main__":
    main()
