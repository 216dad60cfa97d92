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
from server.routes_schemas import ERROR_RESPONSE, EVENTS_URL, json_content, ref
from server.sse import EventStreamResponse, until_disconnect
from server.uploads import UploadLimits, check_content_length, read_multipart, settle_unread_body
from xemo.schemas import AnalyzeOptions

router = APIRouter()

def _not_null(prop: dict) -> dict:
    """A form field is absent or text, never JSON null: keep the non-null alternative."""
    alts = [x for x in prop.get("anyOf", []) if x.get("type") != "null"]
    if len(alts) != 1:
        return prop
    return {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **alts[0]}


def _form_schema() -> dict:
    """The multipart form: the media files plus every option of AnalyzeOptions (form values are text)."""
    opts = {k: _not_null(v) for k, v in AnalyzeOptions.model_json_schema()["properties"].items()}
    opts["labels"] = {"type": "string", "description": opts["labels"]["description"] + " Comma-separated."}
    opts["transcript"]["pattern"] = r"\S"  # blank text is no transcript
    return {
        "type": "object",
        "properties": {
            "video": {
                "type": "string",
                "format": "binary",
                "description": "The clip (mp4/webm/mkv/mov...), with its own audio track or video only.",
            },
            "audio": {"type": "string", "format": "binary", "description": "Separate audio (wav/flac/ogg/mp3...)."},
            **opts,
        },
        "anyOf": [{"required": ["video"]}, {"required": ["audio"]}, {"required": ["transcript"]}],
    }


_OPENAPI = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _form_schema()}}},
    "responses": {
        "200": {
            "description": "The answer (JSON), or with stream=true text/event-stream events label, cue..., token... "
            f"(segment after each finished piece), then done or error; one JSON Schema per event at {EVENTS_URL}.",
            "content": {
                "application/json": {"schema": ref("Answer")},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
        "4XX": ERROR_RESPONSE,
        "503": {"description": "Overloaded, loading or draining; see Retry-After.", **json_content("ErrorEnvelope")},
        "504": {"description": "Not finished within the request's time budget.", **json_content("ErrorEnvelope")},
    },
}


def error_response(err: ApiError, rid: str) -> JSONResponse:
    return JSONResponse(err.body(rid), status_code=err.status, headers=err.headers())


@router.post(
    "/v1/analyze", summary="Analyse one clip (or a transcript alone)", openapi_extra=_OPENAPI, response_model=None
)
async def analyze(request: Request) -> Response:
    state: ServerState = request.app.state.xemo
    rid = request_id(request)
    job = Job(state, rid, received_at(request), "http")
    limits = UploadLimits(state.settings.ingest.max_bytes, state.settings.server.max_field_bytes)
    body_read = reading = False
    try:
        await job.authorize(request.headers.get("authorization"))
        check_content_length(request.headers, limits)
        job.admit()
        t = time.perf_counter()
        reading = True
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
        if not body_read and not await settle_unread_body(request.headers, request.receive, limits, reading):
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
