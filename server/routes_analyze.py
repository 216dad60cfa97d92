"""POST /v1/analyze: one clip in (multipart), the answer out as JSON or as server-sent events.

Order of checks, cheapest first: auth and rate limit, readiness/draining, declared size, admission (503 at once
when full), then the body is read with the byte limit enforced as it streams in, then the clip waits for a
running slot and is ingested. Everything up to here fails with a plain HTTP status; once an event stream has
started, a failure is an `event: error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server.errors import ApiError, UploadTimeout
from server.jobs import Job, parse_options
from server.lifecycle import ServerState
from server.middleware import received_at, request_id
from server.sse import EventStreamResponse, until_disconnect
from server.uploads import UploadLimits, check_content_length, read_multipart

router = APIRouter()

_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "video": {
                            "type": "string",
                            "format": "binary",
                            "description": "The clip (mp4/webm/mkv/mov...), with its own audio track or video only.",
                        },
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "Optional separate audio (wav/flac/ogg/mp3...).",
                        },
                        "transcript": {"type": "string", "description": "What is said (optional)."},
                        "labels": {
                            "type": "string",
                            "description": "Comma-separated label set overriding the default.",
                        },
                        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2048},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                        "stream": {"type": "boolean", "description": "Answer as server-sent events."},
                    },
                    "anyOf": [{"required": ["video"]}, {"required": ["audio"]}],
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "The answer (JSON), or text/event-stream events label, cue, token, done, error.",
            "content": {"text/event-stream": {}},
        },
        "4XX": {"description": 'Error envelope {"error": {"type", "message", "request_id"}}.'},
        "503": {"description": "Overloaded, loading or draining; see Retry-After."},
    },
}


def error_response(err: ApiError, rid: str) -> JSONResponse:
    return JSONResponse(err.body(rid), status_code=err.status, headers=err.headers())


@router.post("/v1/analyze", summary="Analyse one clip", openapi_extra=_FORM_SCHEMA, response_model=None)
async def analyze(request: Request) -> Response:
    state: ServerState = request.app.state.xemo
    rid = request_id(request)
    job = Job(state, rid, received_at(request), "http")
    limits = UploadLimits(state.settings.ingest.max_bytes, state.settings.server.max_field_bytes)
    body_read = False
    try:
        await job.authorize(request.headers.get("authorization"))
        check_content_length(request.headers, limits)
        job.admit()
        t = time.perf_counter()
        try:  # a stalled or trickling client must not hold its place past the request's budget
            form = await asyncio.wait_for(
                read_multipart(request.headers.get("content-type"), request.stream(), limits),
                timeout=max(0.0, job.deadline - time.perf_counter()),
            )
        except TimeoutError:
            raise UploadTimeout("the upload did not finish within the request time budget") from None
        body_read = True
        job.observe_stage("upload", time.perf_counter() - t)
        opts = parse_options(form.fields)
        streaming = opts.stream or "text/event-stream" in request.headers.get("accept", "")
        disconnected, _ = await until_disconnect(
            request.receive, job.prepare(form.files.get("video"), form.files.get("audio"), opts)
        )
        if disconnected:
            job.finish("cancelled")
            return Response(status_code=499)
    except Exception as e:
        resp = error_response(job.fail(e), rid)
        if not body_read:  # answered before the body was read: close rather than read the rest of it
            resp.headers["Connection"] = "close"
        return resp

    cache = job.cache_header
    if streaming:
        # on_close: a client gone before the first event never runs the generator's own cleanup
        return EventStreamResponse(job.events(), headers=cache, on_close=lambda: job.finish("cancelled"))

    async def collect() -> None:
        async with contextlib.aclosing(job.events()) as events:
            async for ev in events:
                if ev["type"] in ("done", "error"):
                    break

    disconnected, _ = await until_disconnect(request.receive, collect())
    if disconnected:
        job.finish("cancelled")
        return Response(status_code=499)
    if job.answer is not None:
        return JSONResponse(job.answer, headers=cache)
    return error_response(job.error or job.fail(RuntimeError("no answer")), rid)
