"""Server-sent events with disconnect detection, and the same disconnect watch for plain JSON responses.

Starlette only notices a gone client on its next write, which may be seconds away while the encoders run; here
a second task waits on `receive()` for `http.disconnect` and cancels the work the moment it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import Response

T = TypeVar("T")
Receive = Callable[[], Awaitable[dict]]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run `work`; cancel it if the client disconnects first. Returns (disconnected, result)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return False, task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return True, None


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[dict[str, Any]],
        headers: dict[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            content=None, status_code=200, headers={**SSE_HEADERS, **(headers or {})}, media_type=self.media_type
        )
        # a stream has no length: drop the content-length: 0 that Response adds for an empty body
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.events = events
        self.on_close = on_close  # runs however the stream ends, even if it never started

    async def __call__(self, scope: dict, receive: Receive, send: Callable[[dict], Awaitable[None]]) -> None:
        async def pump() -> None:
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for ev in self.events:
                    await send({"type": "http.response.body", "body": sse_frame(ev["type"], ev), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client is gone (uvicorn's ClientDisconnected)
                pass
            finally:
                with contextlib.suppress(BaseException):
                    await self.events.aclose()  # type: ignore[attr-defined]
                if self.on_close is not None:
                    self.on_close()

        await until_disconnect(receive, pump())
