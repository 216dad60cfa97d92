"""Async jobs over HTTP: POST /v1/jobs (the /v1/analyze form, answered 202 at once), GET /v1/jobs/{id} (status and
answer) and GET /v1/jobs/{id}/events (SSE: every event from the first, then live ones until done or error).

Present only when jobs can run (`redis_url` set, `jobs.enabled`): the state lives in Redis (server/job_queue.py),
so any process of the deployment answers for a job any other accepted. Only the API key that submitted a job
sees it; to any other key it does not exist (404). `Idempotency-Key` (at most 255 visible ASCII characters)
returns the job the same key and request made before; the same key with a different request is a 409.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from engines.perception.asr.stage import asr_request_error
from server.errors import ApiError, InvalidField, UploadTimeout, http_error, to_api_error
from server.job_queue import JobQueue
from server.jobs import parse_options
from server.lifecycle import ServerState
from server.middleware import request_id
from server.routes_analyze import _form_schema, error_response
from server.routes_schemas import ERROR_RESPONSE, EVENTS_URL, json_content
from server.sse import EventStreamResponse
from server.uploads import UploadLimits, check_content_length, read_multipart, settle_unread_body
from xemo.schemas import JobAccepted, JobStatus

router = APIRouter()


def _job_form() -> dict[str, Any]:
    schema = _form_schema()
    props = {k: v for k, v in schema["properties"].items() if k != "stream"}
    props["callback_url"] = {
        "type": "string",
        "description": "Optional URL the final status is POSTed to; only hosts the operator allowed.",
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {**schema, "properties": props}}},
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
                "description": "Sending the same key and request again returns the same job.",
            }
        ],
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": ERROR_RESPONSE,
    "503": {"description": "Redis unavailable, backlog full or draining; see Retry-After.",
            **json_content("ErrorEnvelope")},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job for this API key (or it expired).", **json_content("ErrorEnvelope")},
}


def _queue(request: Request) -> tuple[ServerState, JobQueue]:
    state: ServerState = request.app.state.xemo
    assert state.jobs is not None  # the router is only mounted with a job queue
    return state, state.jobs


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not (0 < len(key) <= 255) or not all(33 <= ord(c) < 127 for c in key):
        raise InvalidField("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


@router.post(
    "/v1/jobs",
    summary="Queue one clip for analysis; poll or follow the job",
    status_code=202,
    response_model=JobAccepted,
    responses=_ERRORS,
    openapi_extra=_job_form(),
)
async def submit(request: Request) -> Response:
    state, queue = _queue(request)
    rid = request_id(request)
    limits = UploadLimits(state.settings.ingest.max_bytes, state.settings.server.max_field_bytes)
    ticket = None
    body_read = reading = False
    try:
        key_id = state.keys.authenticate(request.headers.get("authorization"))
        if key_id is not None:
            await state.limiter.check(key_id)
        idem = _idempotency_key(request)
        check_content_length(request.headers, limits)
        ticket = state.admission.enter()  # bounds the uploads held in memory at once; 503 when full or draining
        reading = True
        try:
            form = await asyncio.wait_for(
                read_multipart(request.headers.get("content-type"), request.stream(), limits),
                timeout=state.settings.server.request_timeout_s,
            )
        except TimeoutError:
            raise UploadTimeout("the upload did not finish within the request time budget") from None
        body_read = True
        opts = parse_options(form.fields)
        video, audio = form.files.get("video"), form.files.get("audio")
        if video is None and audio is None:
            raise InvalidField("send a clip: a 'video' file (with or without its own audio) and/or an 'audio' file")
        if msg := asr_request_error(state.settings.asr, opts.asr, True):  # refused now, not once the job runs
            raise InvalidField(msg)
        callback = queue.check_callback(form.fields.get("callback_url"))
        job_id, created = await queue.submit(key_id or "", video, audio, opts, idem, callback)
    except Exception as e:
        resp = error_response(to_api_error(e), rid)
        if not body_read and not await settle_unread_body(request.headers, request.receive, limits, reading):
            resp.headers["Connection"] = "close"
        return resp
    finally:
        if ticket is not None:
            ticket.release()
    url = f"/v1/jobs/{job_id}"
    headers = {"Location": url}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse({"id": job_id, "status_url": url}, status_code=202, headers=headers)


async def _owned(request: Request, job_id: str) -> tuple[JobQueue, dict[str, Any] | ApiError]:
    """The job if it exists for the caller's API key, else the error to answer with."""
    state, queue = _queue(request)
    try:
        key_id = state.keys.authenticate(request.headers.get("authorization"))
        job = await queue.read(key_id or "", job_id)
    except Exception as e:
        return queue, to_api_error(e)
    return queue, job if job is not None else http_error(404, "no such job")


@router.get(
    "/v1/jobs/{job_id}",
    summary="A job's status, and its answer or error once it ended",
    response_model=JobStatus,
    response_model_exclude_none=True,
    responses={**_NOT_FOUND, **_ERRORS},
)
async def status(request: Request, job_id: str) -> Response:
    _, job = await _owned(request, job_id)
    if isinstance(job, ApiError):
        return error_response(job, request_id(request))
    return JSONResponse(job)


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="A job's events as SSE: all so far, then live ones until done or error",
    response_model=None,
    response_class=Response,  # not JSON: the 200 documents text/event-stream only
    responses={
        200: {
            "description": "text/event-stream: label, cue, segment, token, done | error; `restarted` when another "
            "process started the job again (discard the events before it). One JSON Schema per event at "
            f"{EVENTS_URL}.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_NOT_FOUND,
        **_ERRORS,
    },
)
async def events(request: Request, job_id: str) -> Response:
    queue, job = await _owned(request, job_id)
    if isinstance(job, ApiError):
        return error_response(job, request_id(request))
    return EventStreamResponse(queue.follow(job_id))
