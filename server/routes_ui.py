"""The browser page at `/`: upload or record a clip and watch the label, the cue timeline and the explanation
stream in over `/v1/stream`. The page is static files shipped in the package (`server/static/`), no CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
# Only these files are served (no directory listing, no path from the client reaches the file system).
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
# The page loads nothing from elsewhere; the player reads the picked file through a blob: URL.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "Not Found")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)
