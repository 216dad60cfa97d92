"""WS /v1/stream: the same analysis as /v1/analyze over one WebSocket.

Protocol (client -> server): one JSON text frame with the options (`transcript`, `labels`, `max_tokens`,
`temperature`; `api_key` when the handshake cannot carry an Authorization header); then the clip as binary
frames; `{"type": "audio"}` switches the following binary frames to a separate audio file (`{"type": "video"}`
back); then `{"type": "end"}`. `{"type": "cancel"}` at any time stops the work. Server -> client: JSON frames
`{"type": "label"|"cue"|"token"|"segment"|"done"|"error", ...}` with the same content as the SSE events, then
close 1000 after `done`. Any failure sends an `error` frame (the HTTP envelope) and closes with 4000 + the HTTP status
(4400 bad protocol use, 4401 auth, 4413 too large, 4415/4422 bad media, 4429 rate limit, 4503 overload,
4504 timeout, 4500 server fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from engines.errors import BadRequest, Cancelled, Timeout
from server.errors import ApiError
from server.jobs import Job, parse_options
from server.lifecycle import ServerState
from server.middleware import received_at, request_id
from server.uploads import too_large

router = APIRouter()

FIRST_FRAME_TIMEOUT_S = 30.0


class ProtocolError(BadRequest):
    type = "protocol_error"


class _ClientGone(Exception):
    pass


def close_code(err: ApiError) -> int:
    return 4000 + err.status if 400 <= err.status < 1000 else 4500


async def _receive(ws: WebSocket, timeout: float) -> dict:
    try:
        msg = await asyncio.wait_for(ws.receive(), timeout=max(0.0, timeout))
    except TimeoutError:
        raise Timeout("the client did not send its clip within the time budget") from None
    if msg["type"] == "websocket.disconnect":
        raise _ClientGone()
    return msg


def _json(msg: dict) -> dict[str, Any]:
    text = msg.get("text")
    if text is None:
        raise ProtocolError("expected a JSON text frame")
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError("text frames must be JSON objects") from None
    if not isinstance(data, dict):
        raise ProtocolError("text frames must be JSON objects")
    return data


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.xemo
    rid = request_id(ws)
    job = Job(state, rid, received_at(ws), "websocket")
    await ws.accept()
    try:
        first = _json(await _receive(ws, FIRST_FRAME_TIMEOUT_S))
        if first.get("type", "start") != "start":
            raise ProtocolError("the first frame must be the options object (type 'start')")
        auth = ws.headers.get("authorization")
        if not auth and isinstance(first.get("api_key"), str):
            auth = "Bearer " + first["api_key"]
        job.authorize(auth)
        opts = parse_options({k: v for k, v in first.items() if k not in ("type", "api_key")})
        job.admit()
        parts: dict[str, bytearray] = {}
        current, total, limit = "video", 0, state.settings.ingest.max_bytes
        t = time.perf_counter()
        while True:
            msg = await _receive(ws, job.deadline - time.perf_counter())
            if msg.get("bytes") is not None:
                total += len(msg["bytes"])
                if total > limit:
                    raise too_large(limit)
                parts.setdefault(current, bytearray()).extend(msg["bytes"])
                continue
            kind = _json(msg).get("type")
            if kind == "end":
                break
            if kind in ("video", "audio"):
                current = kind
            elif kind == "cancel":
                raise Cancelled("cancelled by the client")
            else:
                raise ProtocolError(f"unexpected frame type {kind!r}; send binary frames, then {{'type': 'end'}}")
        job.observe_stage("upload", time.perf_counter() - t)
        video = bytes(parts["video"]) if "video" in parts else None
        audio = bytes(parts["audio"]) if "audio" in parts else None
        await _until_closed(ws, job.prepare(video, audio, opts))
        await _until_closed(ws, _send_events(ws, job))
    except (_ClientGone, WebSocketDisconnect, OSError):  # gone mid-send (uvicorn's ClientDisconnected is OSError)
        job.finish("cancelled")
        return
    except Exception as e:
        err = job.fail(e)
        await _close(ws, close_code(err), {"type": "error", **err.body(rid)})
        return
    if job.error is not None:
        await _close(ws, close_code(job.error), None)
    else:
        await _close(ws, 1000, None)


async def _send_events(ws: WebSocket, job: Job) -> None:
    async with contextlib.aclosing(job.events()) as events:
        async for ev in events:
            await ws.send_text(json.dumps(ev, separators=(",", ":")))
            if ev["type"] in ("done", "error"):
                return


async def _until_closed(ws: WebSocket, work: Any) -> None:
    """Run `work` while watching the socket: a close or a cancel frame stops it at once."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                raise _ClientGone()
            if msg.get("text") is not None:
                try:
                    data = json.loads(msg["text"])
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("type") == "cancel":
                    raise Cancelled("cancelled by the client")

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
    if task.done() and not task.cancelled() and task.exception() is None:
        return
    if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
        raise watcher.exception()  # type: ignore[misc]
    task.result()  # re-raise the work's own error


async def _close(ws: WebSocket, code: int, frame: dict | None) -> None:
    if ws.application_state != WebSocketState.CONNECTED or ws.client_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        if frame is not None:
            await ws.send_text(json.dumps(frame, separators=(",", ":")))
        await ws.close(code)
