"""Request context as pure ASGI middleware: receipt time, request id, the X-Request-Id header, the access log line
and the last-resort 500 envelope.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses and WebSockets pass through untouched and the receipt
time is taken before anything else runs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from server.errors import to_api_error
from server.logging import request_id_var

log = logging.getLogger("xemo.access")

# Echo only ids that are safe in headers and logs; anything else is replaced by a fresh one.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
PROBES = frozenset({"/livez", "/readyz", "/metrics"})


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        received_at = time.perf_counter()
        rid = None
        for k, v in scope.get("headers", []):
            if k == b"x-request-id":
                candidate = v.decode("latin-1")
                rid = candidate if _SAFE_ID.match(candidate) else None
                break
        rid = rid or new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["received_at"] = received_at
        token = request_id_var.set(rid)
        rid_header = (b"x-request-id", rid.encode())
        status = {"code": 0, "started": False}

        async def send_wrapper(message: dict) -> None:
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, rid_header]}
                status["code"] = message.get("status", 101)
                status["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # last resort: a server fault, never a stack trace to the client
            if status["started"]:
                if not getattr(exc, "_xemo_handled", False):
                    log.error("error after the response started", exc_info=exc)
                return
            err = to_api_error(exc)
            if scope["type"] == "http":
                body = json.dumps(err.body(rid)).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    rid_header,
                    *[(k.lower().encode(), v.encode()) for k, v in err.headers().items()],
                ]
                await send({"type": "http.response.start", "status": err.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                status["code"] = err.status
        finally:
            path = scope.get("path", "")
            if path not in PROBES:
                log.info(
                    "%s %s %s",
                    scope.get("method", "WS"),
                    path,
                    status["code"],
                    extra={
                        "path": path,
                        "status": status["code"],
                        "duration_s": round(time.perf_counter() - received_at, 4),
                        "client": (scope.get("client") or ["-"])[0],
                    },
                )
            request_id_var.reset(token)


def request_id(scope_or_conn: Any) -> str:
    scope = scope_or_conn if isinstance(scope_or_conn, dict) else scope_or_conn.scope
    return scope.get("state", {}).get("request_id") or request_id_var.get()


def received_at(scope_or_conn: Any) -> float:
    scope = scope_or_conn if isinstance(scope_or_conn, dict) else scope_or_conn.scope
    return scope.get("state", {}).get("received_at") or time.perf_counter()
