"""The published wire schema: one JSON Schema per stream event, an AsyncAPI document of the streams (SSE,
WebSocket, a job's events), and the `components.schemas` that `/openapi.json` carries. All of it is generated from
xemo/schemas.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from server.middleware import request_id
from xemo import schemas

router = APIRouter()

EVENTS_URL = "/v1/schemas/events"
ASYNCAPI_URL = "/v1/asyncapi.json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": ref(name)}}}


ERROR_RESPONSE = {"description": 'Error envelope {"error": {"type", "message", "request_id"}}.',
                  **json_content("ErrorEnvelope")}


@router.get(
    EVENTS_URL,
    summary="Index of the stream events' JSON Schemas",
    response_model=None,
    responses={200: {"description": "Event type -> schema URL.", "content": {"application/json": {"schema": {
        "type": "object", "required": ["events", "asyncapi"],
        "properties": {"events": {"type": "object", "additionalProperties": {"type": "string"}},
                       "asyncapi": {"type": "string"}}}}}}},
)
async def event_index() -> dict[str, Any]:
    return {"events": {k: f"{EVENTS_URL}/{k}.json" for k in schemas.EVENT_MODELS}, "asyncapi": ASYNCAPI_URL}


@router.get(
    EVENTS_URL + "/{kind}.json",
    summary="One stream event's JSON Schema (label, cue, token, segment, done, error; restarted: job streams only)",
    response_model=None,
    responses={
        200: {"description": "A JSON Schema (draft 2020-12).", "content": {"application/json": {"schema": {
            "type": "object"}}}},
        "4XX": ERROR_RESPONSE,
    },
)
async def event_schema(
    request: Request, kind: str = Path(..., json_schema_extra={"enum": list(schemas.EVENT_MODELS)})
) -> JSONResponse:
    if kind not in schemas.EVENT_MODELS:
        body = {"error": {"type": "not_found", "message": f"no event type {kind!r}; one of "
                          + ", ".join(schemas.EVENT_MODELS), "request_id": request_id(request)}}
        return JSONResponse(schemas.wire(schemas.ErrorEnvelope, body), status_code=404)
    return JSONResponse(schemas.event_schema(kind))


@router.get(
    ASYNCAPI_URL,
    summary="AsyncAPI 3.0 document of the SSE and WebSocket streams",
    response_model=None,
    responses={200: {"description": "AsyncAPI 3.0.", "content": {"application/json": {"schema": {
        "type": "object", "required": ["asyncapi", "channels"]}}}}},
)
async def asyncapi_doc() -> dict[str, Any]:
    return asyncapi()


def asyncapi() -> dict[str, Any]:
    msg = {k: {"$ref": f"#/components/messages/{k}"} for k in schemas.STREAM_EVENT_MODELS}
    job_msg = {k: {"$ref": f"#/components/messages/{k}"} for k in schemas.EVENT_MODELS}
    messages: dict[str, Any] = {
        k: {"name": k, "title": f"{k} event", "summary": (m.__doc__ or "").strip().splitlines()[0],
            "payload": ref(m.__name__)}
        for k, m in schemas.EVENT_MODELS.items()
    }
    messages["options"] = {"name": "options", "title": "options frame (first)", "payload": ref("WsOptionsFrame")}
    messages["control"] = {"name": "control", "title": "control frame", "payload": ref("WsControlFrame")}
    messages["media"] = {"name": "media", "title": "a piece of the clip (binary frame)",
                         "contentType": "application/octet-stream", "payload": {"type": "string", "format": "binary"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "xemo streams",
            "version": "0.1.0",
            "description": "Events in order: one label, the cues, tokens with a segment after each finished piece "
            "of the explanation, then done (or error, last). SSE sends each as `event: <type>` + `data: <json>`.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "analyzeEvents": {
                "address": "/v1/analyze",
                "description": "POST multipart/form-data with stream=true or Accept: text/event-stream.",
                "messages": msg,
            },
            "stream": {
                "address": "/v1/stream",
                "description": "WebSocket: the options frame, binary media frames (none for text only), "
                '{"type": "end"}; the events come back, then close 1000 (4000 + HTTP status on errors).',
                "messages": {**msg, "options": {"$ref": "#/components/messages/options"},
                             "control": {"$ref": "#/components/messages/control"},
                             "media": {"$ref": "#/components/messages/media"}},
            },
            "jobEvents": {
                "address": "/v1/jobs/{job_id}/events",
                "description": "GET, SSE (servers with Redis only): a job's events from the first, then live ones "
                "until done or error. `restarted` means another process started the job again: discard the events "
                "before it.",
                "parameters": {"job_id": {"description": "The id POST /v1/jobs answered with."}},
                "messages": job_msg,
            },
        },
        "operations": {
            "receiveAnalyzeEvents": {"action": "receive", "channel": {"$ref": "#/channels/analyzeEvents"},
                                     "messages": [{"$ref": f"#/channels/analyzeEvents/messages/{k}"} for k in msg]},
            "sendStream": {"action": "send", "channel": {"$ref": "#/channels/stream"},
                           "messages": [{"$ref": f"#/channels/stream/messages/{k}"}
                                        for k in ("options", "control", "media")]},
            "receiveStream": {"action": "receive", "channel": {"$ref": "#/channels/stream"},
                              "messages": [{"$ref": f"#/channels/stream/messages/{k}"} for k in msg]},
            "receiveJobEvents": {"action": "receive", "channel": {"$ref": "#/channels/jobEvents"},
                                 "messages": [{"$ref": f"#/channels/jobEvents/messages/{k}"} for k in job_msg]},
        },
        "components": {"messages": messages, "schemas": schemas.components()},
    }
