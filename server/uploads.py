"""Streaming multipart/form-data reader that enforces the byte limits while the body arrives.

Starlette has no total body limit, so the form is parsed here chunk by chunk with python-multipart's push
parser: a declared Content-Length over the limit is refused before one body byte is read, and a chunked or
lying body is refused (413) as soon as the running count passes the limit, so the server never buffers more
than the limit. Files are kept in memory (the limit is what ingest accepts anyway). A request answered before
its body is read (refused at admission, say) has the rest of its body read and dropped first, within a byte and
time bound, so the client receives the answer rather than a connection reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from engines.errors import BadRequest, Cancelled, TooLarge
from server.errors import UnsupportedContentType

FILE_FIELDS = ("video", "audio")
MAX_PARTS = 16
_OVERHEAD = 64 * 1024  # part headers and boundaries
DRAIN_S = 2.0  # the longest an early answer waits for the rest of its request's body


@dataclass
class UploadLimits:
    max_file_bytes: int  # all file parts together (settings.ingest.max_bytes)
    max_field_bytes: int  # each text field

    @property
    def max_body_bytes(self) -> int:
        return self.max_file_bytes + MAX_PARTS * self.max_field_bytes + _OVERHEAD


@dataclass
class Form:
    files: dict[str, bytes] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"upload exceeds the limit of {limit} bytes; send a shorter or smaller clip")


def check_content_length(headers: dict[str, str] | object, limits: UploadLimits) -> None:
    """Refuse at once when the declared body is already over the limit."""
    value = headers.get("content-length")  # type: ignore[attr-defined]
    if value is None:
        return
    try:
        n = int(value)
    except ValueError:
        raise BadRequest("Content-Length is not a number") from None
    if n > limits.max_body_bytes:
        raise too_large(limits.max_file_bytes)


async def read_multipart(content_type: str | None, chunks: AsyncIterator[bytes], limits: UploadLimits) -> Form:
    """Parse the body as it streams in; raise TooLarge the moment a limit is passed."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise UnsupportedContentType("send the clip as multipart/form-data (fields: video, audio, transcript, ...)")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise BadRequest("multipart/form-data needs a boundary parameter")

    form = Form()
    state: dict = {"name": None, "buf": None, "hfield": b"", "hvalue": b"", "headers": {}, "parts": 0, "files": 0}

    def on_part_begin() -> None:
        state["parts"] += 1
        if state["parts"] > MAX_PARTS:
            raise BadRequest(f"too many form parts (at most {MAX_PARTS})")
        state["headers"] = {}
        state["name"] = None
        state["buf"] = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hfield"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["hfield"].strip().lower()] = state["hvalue"].strip()
        state["hfield"] = b""
        state["hvalue"] = b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name")
        if name is None:
            raise BadRequest("a form part has no name")
        state["name"] = name.decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        n = end - start
        if state["name"] in FILE_FIELDS:
            state["files"] += n
            if state["files"] > limits.max_file_bytes:
                raise too_large(limits.max_file_bytes)
        elif len(state["buf"]) + n > limits.max_field_bytes:
            raise TooLarge(f"form field {state['name']!r} exceeds {limits.max_field_bytes} bytes")
        state["buf"] += data[start:end]

    def on_part_end() -> None:
        name, buf = state["name"], state["buf"]
        if name in FILE_FIELDS:
            if name in form.files:
                raise BadRequest(f"form field {name!r} given twice")
            form.files[name] = bytes(buf)
        elif name is not None:
            try:
                form.fields[name] = bytes(buf).decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"form field {name!r} is not UTF-8 text") from None
        state["buf"] = None

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in chunks:
            form.body_bytes += len(chunk)
            if form.body_bytes > limits.max_body_bytes:
                raise too_large(limits.max_file_bytes)
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except (TooLarge, BadRequest):
        raise
    except Exception as e:
        if type(e).__name__ == "ClientDisconnect":
            raise Cancelled("client disconnected during upload") from None
        raise BadRequest("malformed multipart/form-data body") from None
    return form


async def discard_body(receive: Callable[[], Awaitable[dict[str, Any]]], max_bytes: int,
                       timeout_s: float | None = None) -> bool:
    """Read and drop the body of a request answered before its body was read (refused at admission, say).

    Closing a socket with unread bytes in it makes the kernel reset the connection, and a client still sending
    its upload then sees the reset instead of the answer (a 503 with Retry-After becomes a bare connection error).
    Nothing is kept; at most `max_bytes` and `timeout_s` (default DRAIN_S). True when the body was read to its
    end."""

    async def run() -> bool:
        n = 0
        while True:
            msg = await receive()
            if msg.get("type") != "http.request":
                return False  # the client went away
            n += len(msg.get("body", b""))
            if n > max_bytes:
                return False
            if not msg.get("more_body", False):
                return True

    try:
        return await asyncio.wait_for(run(), DRAIN_S if timeout_s is None else timeout_s)
    except TimeoutError:
        return False


async def settle_unread_body(headers: Any, receive: Callable[[], Awaitable[dict[str, Any]]], limits: UploadLimits,
                             started: bool) -> bool:
    """Before answering a request whose body was not read: drain it when that is cheap and bounded (not yet
    started, declared length within the limit). False means the connection must be closed instead."""
    if started:
        return False  # part of it was parsed already: what is left cannot be told apart from the next request
    if "100-continue" in headers.get("expect", "").lower():
        return False  # the client sends nothing before it is told to go on: closing resets nothing
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
        return False
    return await discard_body(receive, limits.max_body_bytes)
