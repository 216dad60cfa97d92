"""The FastAPI application factory: routers, the error envelope handlers, request context, CORS and lifespan.

`create_app(settings)` builds one app around one `ServerState`; `xemo serve` runs it under uvicorn. With
several uvicorn workers, each worker calls `create_app()` with no argument and reads the same settings. The Ray
ingress (server/ray_app.py) builds the same app with an `attach` hook that puts the stages and the LLM on Ray.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.errors import XemoError
from server import logging as xlog
from server import probes, routes_analyze, routes_jobs, routes_schemas, routes_ui, routes_ws
from server.errors import http_error, to_api_error
from server.lifecycle import Attach, ServerState
from server.middleware import RequestContextMiddleware, request_id
from xemo import schemas
from xemo.settings import Settings, load_settings


def create_app(settings: Settings | None = None, attach: Attach | None = None) -> FastAPI:
    settings = settings or load_settings()
    state = ServerState(settings, attach)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()  # models load in a worker thread; /readyz says when they are ready
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="xemo",
        version="0.1.0",
        summary="Explainable multimodal emotion recognition (XEmoGPT) inference server",
        lifespan=lifespan,
    )
    app.state.xemo = state
    app.include_router(probes.router)
    app.include_router(routes_analyze.router)
    app.include_router(routes_ws.router)
    if state.jobs is not None:  # async jobs need Redis; without it the routes do not exist
        app.include_router(routes_jobs.router)
    app.include_router(routes_schemas.router)
    app.include_router(routes_ui.router)  # the page at / (the API docs stay at /docs)
    _publish_schemas(app)

    @app.exception_handler(XemoError)
    async def _xemo_error(request: Request, exc: XemoError) -> JSONResponse:
        err = to_api_error(exc)
        return JSONResponse(err.body(request_id(request)), status_code=err.status, headers=err.headers())

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this, sends it, then re-raises to the server; mark the
        # exception so the request-context middleware does not log it a second time.
        err = to_api_error(exc)
        exc._xemo_handled = True  # type: ignore[attr-defined]
        return JSONResponse(err.body(request_id(request)), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = http_error(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(request_id(request)), status_code=err.status, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = http_error(
            422,
            "invalid request: "
            + "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()),
        )
        return JSONResponse(err.body(request_id(request)), status_code=422)

    if settings.server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id"],
        )
    app.add_middleware(RequestContextMiddleware)  # outermost: sees every request first
    return app


def _publish_schemas(app: FastAPI) -> None:
    """`/openapi.json` as FastAPI builds it, plus every wire model of xemo/schemas.py under components.schemas
    (the routes reference them by name)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas.components())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn's import string (multi-worker mode): settings from XEMO_* / XEMO_CONFIG."""
    settings = load_settings()
    xlog.configure(settings.log_level, settings.server.log_json)
    return create_app(settings)
