"""A small Python client for a xemo server, sync (`Client`) and async (`AsyncClient`), on httpx.

    from xemo.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as xemo:
        answer = xemo.analyze(video="clip.mp4", transcript="I cannot believe it.")
        print(answer.emotion.label, [c.id for c in answer.cues])
        for ev in xemo.stream(video="clip.mp4"):   # LabelEvent, CueEvent..., TokenEvent..., DoneEvent
            print(ev.type)

Media is a path or bytes; a transcript alone is a text-only request; `asr=True` has the clip's speech transcribed
even when a transcript is given. Answers and events are the pydantic models of xemo/schemas.py. 429 and 503
answers are retried (up to `max_retries`), waiting as long as Retry-After says (capped by `max_retry_wait_s`). A
server error becomes `ApiError` with the envelope's type, message and request id.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from xemo import schemas
from xemo.schemas import Answer, DoneEvent, ErrorEvent, JobAccepted, JobStatus, ModelList

Media = str | Path | bytes | bytearray | memoryview
Event = schemas.AnyEvent  # a job's stream may also carry RestartedEvent
RETRY_STATUSES = (429, 503)
WS_CHUNK = 1 << 20  # below the server's default WebSocket message limit (4 MiB)


class ApiError(Exception):
    """The server refused or failed the request: its error envelope, the HTTP status (or WebSocket close code)."""

    def __init__(self, status: int, type: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.request_id = request_id

    @classmethod
    def from_response(cls, r: httpx.Response) -> ApiError:
        try:
            env = schemas.ErrorEnvelope.model_validate(r.json())
            return cls(r.status_code, env.error.type, env.error.message, env.error.request_id)
        except ValueError:
            return cls(r.status_code, "http_error", f"HTTP {r.status_code}: {r.text[:200]}",
                       r.headers.get("x-request-id"))

    @classmethod
    def from_event(cls, ev: ErrorEvent, status: int = 0) -> ApiError:
        return cls(status, ev.error.type, ev.error.message, ev.error.request_id)


# -- what both clients share -------------------------------------------------------------------------------------


def _read(media: Media, what: str) -> tuple[str, bytes]:
    if isinstance(media, bytes | bytearray | memoryview):
        return what, bytes(media)
    path = Path(media)
    return path.name, path.read_bytes()


def _request(video: Media | None, audio: Media | None, transcript: str | None, labels: list[str] | str | None,
             max_tokens: int | None, temperature: float | None,
             asr: bool | None = None) -> tuple[dict[str, tuple[str, bytes]], dict[str, str]]:
    """The multipart files and text fields of one analysis (read once, so a retry sends the same bytes)."""
    if video is None and audio is None and not (transcript or "").strip():
        raise ValueError("nothing to analyse: give video, audio or transcript")
    files = {k: _read(m, k) for k, m in (("video", video), ("audio", audio)) if m is not None}
    data: dict[str, str] = {}
    if transcript is not None:
        data["transcript"] = transcript
    if labels is not None:
        data["labels"] = labels if isinstance(labels, str) else ",".join(labels)
    if max_tokens is not None:
        data["max_tokens"] = str(max_tokens)
    if temperature is not None:
        data["temperature"] = repr(float(temperature))
    if asr is not None:
        data["asr"] = "true" if asr else "false"
    return files, data


def _multipart(files: dict[str, tuple[str, bytes]], data: dict[str, str]) -> dict[str, tuple[str | None, Any]]:
    """Files and text fields as one multipart body (httpx would send fields alone url-encoded)."""
    return {**files, **{k: (None, v) for k, v in data.items()}}


def _options_frame(data: dict[str, str]) -> str:
    # the key travels in the handshake's Authorization header
    return json.dumps({"type": "options", **data})


def retry_wait(r: httpx.Response | None, attempt: int, cap: float) -> float:
    """Seconds to wait before retry `attempt` (0-based): Retry-After (seconds or an HTTP date), else backoff."""
    value = r.headers.get("retry-after") if r is not None else None
    wait: float | None = None
    if value:
        try:
            wait = float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            wait = when.timestamp() - time.time() if when is not None else None
    if wait is None:
        wait = 0.5 * 2**attempt
    return min(max(wait, 0.0), cap)


class SSEParser:
    """Server-sent events, line by line: `feed(line)` returns a typed event when a blank line ends one."""

    def __init__(self) -> None:
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
            return None
        if line or not self.data:
            return None  # `event:` / `id:` / comments; the payload names its own type
        data, self.data = "\n".join(self.data), []
        return schemas.parse_event(json.loads(data))


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[8:]
    if base_url.startswith("http://"):
        return "ws://" + base_url[7:]
    return base_url


def _checked(ev: Event, raise_on_error: bool, status: int = 0) -> Event:
    if raise_on_error and isinstance(ev, ErrorEvent):
        raise ApiError.from_event(ev, status)
    return ev


def _incomplete(detail: str) -> ApiError:
    return ApiError(0, "incomplete_stream", f"the stream ended before its done event ({detail})")


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float, connect_timeout: float,
                 max_retries: int, max_retry_wait_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.httpx_timeout = httpx.Timeout(timeout, connect=connect_timeout)

    def _should_retry(self, r: httpx.Response, attempt: int) -> float | None:
        if r.status_code in RETRY_STATUSES and attempt < self.max_retries:
            return retry_wait(r, attempt, self.max_retry_wait_s)
        return None


# -- sync --------------------------------------------------------------------------------------------------------


class Client(_Base):
    """Blocking client. Use it as a context manager, or call `close()`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 300.0,
                 connect_timeout: float = 10.0, max_retries: int = 3, max_retry_wait_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, connect_timeout, max_retries, max_retry_wait_s)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.httpx_timeout,
                                 transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, url: str, stream: bool = False, **kw: Any) -> httpx.Response:
        """One request, retried on 429/503; a streamed response is returned open (the caller closes it)."""
        attempt = 0
        while True:
            r = self.http.send(self.http.build_request(method, url, **kw), stream=stream)
            if (wait := self._should_retry(r, attempt)) is None:
                break
            r.close()
            time.sleep(wait)
            attempt += 1
        if r.status_code >= 400:
            if stream:
                r.read()
                r.close()
            raise ApiError.from_response(r)
        return r

    def analyze(self, video: Media | None = None, audio: Media | None = None, transcript: str | None = None,
                labels: list[str] | str | None = None, max_tokens: int | None = None,
                temperature: float | None = None, asr: bool | None = None,
                request_id: str | None = None) -> Answer:
        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        headers = {"X-Request-Id": request_id} if request_id else {}
        r = self._send("POST", "/v1/analyze", files=_multipart(files, data), headers=headers)
        return Answer.model_validate(r.json())

    def stream(self, video: Media | None = None, audio: Media | None = None, transcript: str | None = None,
               labels: list[str] | str | None = None, max_tokens: int | None = None,
               temperature: float | None = None, asr: bool | None = None,
               raise_on_error: bool = True) -> Iterator[Event]:
        """Typed events over SSE, the last a DoneEvent carrying the Answer. An error event raises ApiError
        (or, with raise_on_error=False, is yielded last)."""
        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        r = self._send("POST", "/v1/analyze", stream=True, files=_multipart(files, {**data, "stream": "true"}),
                       headers={"Accept": "text/event-stream"})
        yield from self._events(r, raise_on_error)

    def _events(self, r: httpx.Response, raise_on_error: bool) -> Iterator[Event]:
        parser = SSEParser()
        try:
            for line in r.iter_lines():
                ev = parser.feed(line)
                if ev is not None:
                    yield _checked(ev, raise_on_error)
                    if isinstance(ev, DoneEvent | ErrorEvent):
                        return
        finally:
            r.close()
        raise _incomplete("the connection closed")

    def stream_ws(self, video: Media | None = None, audio: Media | None = None, transcript: str | None = None,
                  labels: list[str] | str | None = None, max_tokens: int | None = None,
                  temperature: float | None = None, asr: bool | None = None,
                  raise_on_error: bool = True) -> Iterator[Event]:
        """The same events over `WS /v1/stream`. Refusals for load (close 4429/4503 before any event) are
        retried with backoff (a WebSocket close carries no Retry-After)."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        for attempt in range(self.max_retries + 1):
            with connect(_ws_url(self.base_url) + "/v1/stream", open_timeout=self.connect_timeout,
                         max_size=None, additional_headers=self.headers) as ws:
                ws.send(_options_frame(data))
                for role, (_, raw) in files.items():
                    if role == "audio":
                        ws.send(json.dumps({"type": "audio"}))
                    for i in range(0, len(raw), WS_CHUNK):
                        ws.send(raw[i : i + WS_CHUNK])
                ws.send(json.dumps({"type": "end"}))
                first = True
                while True:
                    try:
                        ev = schemas.parse_event(json.loads(ws.recv(timeout=self.timeout)))
                    except ConnectionClosed as e:
                        raise _incomplete(f"WebSocket closed with {e.rcvd.code if e.rcvd else 'no code'}") from None
                    except TimeoutError:
                        raise ApiError(0, "timeout", f"no event within {self.timeout} s") from None
                    if isinstance(ev, ErrorEvent):
                        code = _close_code(ws)
                        if first and code - 4000 in RETRY_STATUSES and attempt < self.max_retries:
                            break
                        yield _checked(ev, raise_on_error, code - 4000 if code >= 4000 else 0)
                        return
                    first = False
                    yield ev
                    if isinstance(ev, DoneEvent):
                        return
            time.sleep(retry_wait(None, attempt, self.max_retry_wait_s))

    def submit_job(self, video: Media | None = None, audio: Media | None = None, transcript: str | None = None,
                   labels: list[str] | str | None = None, max_tokens: int | None = None,
                   temperature: float | None = None, asr: bool | None = None) -> JobAccepted:
        """`POST /v1/jobs`: the same form as analyze; answers at once with the job's id."""
        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        return JobAccepted.model_validate(self._send("POST", "/v1/jobs", files=_multipart(files, data)).json())

    def job(self, job_id: str) -> JobStatus:
        """`GET /v1/jobs/{id}`: queued, running, done (with the answer) or failed (with the error)."""
        return JobStatus.model_validate(self._send("GET", f"/v1/jobs/{job_id}").json())

    def job_events(self, job_id: str, raise_on_error: bool = True) -> Iterator[Event]:
        """`GET /v1/jobs/{id}/events`: the job's events from the start, then live. A RestartedEvent means another
        process started the job again: the events before it belong to the abandoned attempt."""
        r = self._send("GET", f"/v1/jobs/{job_id}/events", stream=True, headers={"Accept": "text/event-stream"})
        yield from self._events(r, raise_on_error)

    def models(self) -> ModelList:
        return ModelList.model_validate(self._send("GET", "/v1/models").json())

    def ready(self) -> bool:
        return self.http.get("/readyz").status_code == 200

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Wait until /readyz is 200 (a server still loading its models answers 503)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.ready():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ApiError(503, "not_ready", f"the server at {self.base_url} did not become ready")
            time.sleep(0.5)


def _close_code(ws: Any) -> int:
    """The close code that follows an error frame (the server closes right after sending it)."""
    from websockets.exceptions import ConnectionClosed

    try:
        ws.recv(timeout=10)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else 0
    except TimeoutError:
        return 0
    return 0


# -- async -------------------------------------------------------------------------------------------------------


class AsyncClient(_Base):
    """The same API for asyncio: `await analyze(...)`, `async for ev in stream(...)`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 300.0,
                 connect_timeout: float = 10.0, max_retries: int = 3, max_retry_wait_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, limits: httpx.Limits | None = None) -> None:
        super().__init__(base_url, api_key, timeout, connect_timeout, max_retries, max_retry_wait_s)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.httpx_timeout,
                                      transport=transport, limits=limits or httpx.Limits())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, url: str, stream: bool = False, **kw: Any) -> httpx.Response:
        attempt = 0
        while True:
            r = await self.http.send(self.http.build_request(method, url, **kw), stream=stream)
            if (wait := self._should_retry(r, attempt)) is None:
                break
            await r.aclose()
            await asyncio.sleep(wait)
            attempt += 1
        if r.status_code >= 400:
            if stream:
                await r.aread()
                await r.aclose()
            raise ApiError.from_response(r)
        return r

    async def analyze(self, video: Media | None = None, audio: Media | None = None, transcript: str | None = None,
                      labels: list[str] | str | None = None, max_tokens: int | None = None,
                      temperature: float | None = None, asr: bool | None = None,
                      request_id: str | None = None) -> Answer:
        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        headers = {"X-Request-Id": request_id} if request_id else {}
        r = await self._send("POST", "/v1/analyze", files=_multipart(files, data), headers=headers)
        return Answer.model_validate(r.json())

    async def stream(self, video: Media | None = None, audio: Media | None = None, transcript: str | None = None,
                     labels: list[str] | str | None = None, max_tokens: int | None = None,
                     temperature: float | None = None, asr: bool | None = None,
                     raise_on_error: bool = True) -> AsyncIterator[Event]:
        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        r = await self._send("POST", "/v1/analyze", stream=True, files=_multipart(files, {**data, "stream": "true"}),
                             headers={"Accept": "text/event-stream"})
        async for ev in self._events(r, raise_on_error):
            yield ev

    async def _events(self, r: httpx.Response, raise_on_error: bool) -> AsyncIterator[Event]:
        parser = SSEParser()
        try:
            async for line in r.aiter_lines():
                ev = parser.feed(line)
                if ev is not None:
                    yield _checked(ev, raise_on_error)
                    if isinstance(ev, DoneEvent | ErrorEvent):
                        return
        finally:
            await r.aclose()
        raise _incomplete("the connection closed")

    async def stream_ws(self, video: Media | None = None, audio: Media | None = None,
                        transcript: str | None = None, labels: list[str] | str | None = None,
                        max_tokens: int | None = None, temperature: float | None = None,
                        asr: bool | None = None, raise_on_error: bool = True) -> AsyncIterator[Event]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        for attempt in range(self.max_retries + 1):
            async with connect(_ws_url(self.base_url) + "/v1/stream", open_timeout=self.connect_timeout,
                               max_size=None, additional_headers=self.headers) as ws:
                await ws.send(_options_frame(data))
                for role, (_, raw) in files.items():
                    if role == "audio":
                        await ws.send(json.dumps({"type": "audio"}))
                    for i in range(0, len(raw), WS_CHUNK):
                        await ws.send(raw[i : i + WS_CHUNK])
                await ws.send(json.dumps({"type": "end"}))
                first = True
                while True:
                    try:
                        raw_ev = await asyncio.wait_for(ws.recv(), timeout=self.timeout)
                    except ConnectionClosed as e:
                        raise _incomplete(f"WebSocket closed with {e.rcvd.code if e.rcvd else 'no code'}") from None
                    except TimeoutError:
                        raise ApiError(0, "timeout", f"no event within {self.timeout} s") from None
                    ev = schemas.parse_event(json.loads(raw_ev))
                    if isinstance(ev, ErrorEvent):
                        code = 0
                        try:
                            await asyncio.wait_for(ws.recv(), timeout=10)
                        except ConnectionClosed as e:
                            code = e.rcvd.code if e.rcvd else 0
                        except TimeoutError:
                            pass
                        if first and code - 4000 in RETRY_STATUSES and attempt < self.max_retries:
                            break
                        yield _checked(ev, raise_on_error, code - 4000 if code >= 4000 else 0)
                        return
                    first = False
                    yield ev
                    if isinstance(ev, DoneEvent):
                        return
            await asyncio.sleep(retry_wait(None, attempt, self.max_retry_wait_s))

    async def submit_job(self, video: Media | None = None, audio: Media | None = None,
                         transcript: str | None = None, labels: list[str] | str | None = None,
                         max_tokens: int | None = None, temperature: float | None = None,
                         asr: bool | None = None) -> JobAccepted:
        files, data = _request(video, audio, transcript, labels, max_tokens, temperature, asr)
        r = await self._send("POST", "/v1/jobs", files=_multipart(files, data))
        return JobAccepted.model_validate(r.json())

    async def job(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate((await self._send("GET", f"/v1/jobs/{job_id}")).json())

    async def job_events(self, job_id: str, raise_on_error: bool = True) -> AsyncIterator[Event]:
        r = await self._send("GET", f"/v1/jobs/{job_id}/events", stream=True,
                             headers={"Accept": "text/event-stream"})
        async for ev in self._events(r, raise_on_error):
            yield ev

    async def models(self) -> ModelList:
        return ModelList.model_validate((await self._send("GET", "/v1/models")).json())

    async def ready(self) -> bool:
        return (await self.http.get("/readyz")).status_code == 200

    async def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if await self.ready():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ApiError(503, "not_ready", f"the server at {self.base_url} did not become ready")
            await asyncio.sleep(0.5)
