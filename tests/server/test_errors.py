"""The one error envelope: typed errors keep their status and type, anything else is a bare 500 that leaks
nothing; the request-context middleware puts X-Request-Id on every response, including that 500."""

from __future__ import annotations

import asyncio
import re

import httpx

from engines.errors import CorruptMedia, Overloaded, Timeout, TooLarge, UnsupportedFormat
from server.app import create_app
from server.errors import RateLimited, Unauthorized, UploadTimeout, to_api_error
from xemo.settings import load_settings


def test_typed_errors_map_to_status_type_and_outcome() -> None:
    cases = [
        (UnsupportedFormat("x"), 415, "unsupported_format", "bad_media"),
        (CorruptMedia("x"), 422, "corrupt_media", "bad_media"),
        (TooLarge("x"), 413, "too_large", "too_large"),
        (Unauthorized("x"), 401, "unauthorized", "unauthorized"),
        (RateLimited("x", 0.2), 429, "rate_limited", "rate_limited"),
        (Overloaded("x", 3.5), 503, "overloaded", "rejected_overload"),
        (Timeout("x"), 504, "timeout", "timeout"),
        (UploadTimeout("x"), 408, "upload_timeout", "timeout"),
    ]
    for exc, status, etype, outcome in cases:
        err = to_api_error(exc)
        assert (err.status, err.type, err.outcome) == (status, etype, outcome), exc
    assert to_api_error(RateLimited("x", 0.2)).headers() == {"Retry-After": "1"}  # whole seconds, at least 1
    assert to_api_error(Overloaded("x", 3.5)).headers() == {"Retry-After": "4"}


async def boom() -> None:
    raise RuntimeError("secret at /etc/passwd, object at 0x7f00deadbeef")


def test_unhandled_errors_become_an_opaque_500_with_the_request_id() -> None:
    # the real app (its lifespan, which loads the models, does not run here) with one route that has a bug
    app = create_app(load_settings(None))
    app.add_api_route("/boom", boom)

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (
                await c.get("/boom"),
                await c.get("/livez", headers={"X-Request-Id": "abc-123"}),
                await c.post("/v1/analyze"),
            )

    r, echoed, not_ready = asyncio.run(main())
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["type"] == "internal_error"
    assert body["error"]["request_id"] == r.headers["x-request-id"]
    assert "passwd" not in r.text and "0x7f" not in r.text and "Traceback" not in r.text
    assert echoed.headers["x-request-id"] == "abc-123"
    # models not loaded: 503 with Retry-After in the envelope, not a crash
    assert not_ready.status_code == 503 and not_ready.json()["error"]["type"] == "not_ready"
    assert "retry-after" in not_ready.headers
    assert re.fullmatch(r"[0-9a-f]{32}", not_ready.headers["x-request-id"])
