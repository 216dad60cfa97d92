"""Probes and read-only endpoints: /livez, /readyz, /metrics, /v1/models. None of them touches the models, so
they answer at once however busy the workers are; probes are exempt from auth and from the access log."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.errors import to_api_error
from server.lifecycle import ServerState
from server.middleware import request_id
from server.routes_analyze import error_response
from server.routes_schemas import ERROR_RESPONSE, json_content
from xemo import schemas

router = APIRouter()


@router.get(
    "/livez", summary="Process alive (checks nothing else)", response_model=None,
    responses={200: {"description": "Alive.", **json_content("Liveness")}},
)
async def livez() -> dict:
    return schemas.wire(schemas.Liveness, {"status": "alive"})


@router.get(
    "/readyz", summary="Models loaded, not draining, queue not saturated", response_model=None,
    responses={
        200: {"description": "Ready.", **json_content("Readiness")},
        503: {"description": "Not ready (see checks); Retry-After.", **json_content("Readiness")},
    },
)
async def readyz(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.xemo
    ok, body = state.readiness()
    headers = {} if ok else {"Retry-After": str(max(1, int(state.settings.server.retry_after_s)))}
    return JSONResponse(schemas.wire(schemas.Readiness, body), status_code=200 if ok else 503, headers=headers)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        404: {"description": "Metrics disabled.", **json_content("ErrorEnvelope")},
    },
)
async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.xemo
    if not state.settings.server.metrics_enabled:
        return JSONResponse(
            {"error": {"type": "not_found", "message": "metrics are disabled", "request_id": request_id(request)}},
            status_code=404,
        )
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/models", summary="The model behind the answers", response_model=None,
    responses={200: {"description": "The served model.", **json_content("ModelList")}, "4XX": ERROR_RESPONSE},
)
async def models(request: Request) -> Response:
    state: ServerState = request.app.state.xemo
    try:
        state.keys.authenticate(request.headers.get("authorization"))
    except Exception as e:
        return error_response(to_api_error(e), request_id(request))
    p = state.pipeline
    s = state.settings
    data = {
        "object": "list",
        "data": [
            {
                "id": s.profile,
                "object": "model",
                "profile": s.profile,
                "ready": state.ready,
                "model": p.model if p is not None else None,
                "stages": state.runner.info() if state.runner is not None else {},
                "labels": list(s.lite.labels) if s.profile == "lite" else None,
                "max_num_seqs": s.server.max_num_seqs,
                "limits": {"max_upload_bytes": s.ingest.max_bytes, "max_duration_s": s.ingest.max_duration_s},
            }
        ],
    }
    return JSONResponse(schemas.wire(schemas.ModelList, data))
