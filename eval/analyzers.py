"""How a benchmark run gets an answer for one manifest row: in this process, or from a running xemo server.

Both return the answer as JSON-able data (the shape of `Answer.to_dict()`, which is also the server's body).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import httpx

from engines.errors import XemoError
from eval.manifest import ManifestRow
from xemo.settings import Settings


class RemoteError(XemoError):
    """The server answered with its JSON error envelope (or something that is not an answer)."""

    def __init__(self, type_: str, message: str, status: int) -> None:
        super().__init__(message)
        self.type = type_
        self.http_status = status


class Analyzer(Protocol):
    model: str

    async def start(self) -> None: ...

    async def analyze(self, row: ManifestRow) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class InProcessAnalyzer:
    """ingest -> the configured pipeline, loaded once; stage calls run in worker threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipeline: Any = None
        self.model = ""
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        from engines.pipeline import build_pipeline

        if self.pipeline is not None:  # already loaded (a caller reusing one analyzer for several runs)
            return
        self.pipeline = build_pipeline(self.settings)
        await asyncio.to_thread(self.pipeline.load)
        self.model = getattr(self.pipeline, "model", "") or self.settings.profile

    async def _run_stage(self, name: str, item: Any) -> Any:
        # One call per stage at a time: with --concurrency > 1 clips overlap across stages, but a stage's
        # models are never entered from two threads at once (the server's batcher gives the same guarantee).
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            stage = self.pipeline.stages[name]
            (out,) = await asyncio.to_thread(stage.run_batch, [item])
            return out

    async def analyze(self, row: ManifestRow) -> dict[str, Any]:
        from engines.ingest import ingest
        from engines.types import AnalyzeRequest

        clip = await asyncio.to_thread(ingest, row.video, row.audio, self.settings.ingest)
        answer = await self.pipeline.analyze(AnalyzeRequest(clip=clip, transcript=row.transcript), self._run_stage)
        return answer.to_dict()

    async def close(self) -> None:
        if self.pipeline is not None:
            with contextlib.suppress(Exception):
                self.pipeline.close()
            self.pipeline = None


class HttpAnalyzer:
    """POST multipart (video, audio, transcript) to URL/v1/analyze; honours Retry-After on 429/503."""

    def __init__(self, base_url: str, settings: Settings, api_key: str | None = None, max_retries: int = 5) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(settings.server.request_timeout_s + 30.0, connect=10.0)
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers)
        self.model = ""

    async def start(self, ready_timeout_s: float = 300.0) -> None:
        # A server that is still loading answers 503 on /readyz; wait for it rather than fail every clip.
        deadline = asyncio.get_running_loop().time() + ready_timeout_s
        while True:
            try:
                r = await self.client.get("/readyz")
                if r.status_code != 503:
                    break
            except httpx.HTTPError as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise RemoteError("unreachable", f"cannot reach the server at {self.base_url}: {e}", 503) from None
            if asyncio.get_running_loop().time() > deadline:
                raise RemoteError("not_ready", f"the server at {self.base_url} did not become ready", 503)
            await asyncio.sleep(1.0)
        try:
            r = await self.client.get("/v1/models")
        except httpx.HTTPError as e:
            raise RemoteError("unreachable", f"cannot reach the server at {self.base_url}: {e}", 503) from None
        if r.status_code == 200:
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                data = r.json()
                first = data["data"][0] if isinstance(data, dict) and "data" in data else data
                self.model = str(first.get("id") or first.get("model") or "") if isinstance(first, dict) else ""

    async def analyze(self, row: ManifestRow) -> dict[str, Any]:
        files = {"video": (row.video.name, row.video.read_bytes())}
        if row.audio is not None:
            files["audio"] = (row.audio.name, row.audio.read_bytes())
        data = {"transcript": row.transcript} if row.transcript else {}
        for attempt in range(self.max_retries + 1):
            r = await self.client.post("/v1/analyze", files=files, data=data, headers={"X-Request-Id": row.id})
            if r.status_code in (429, 503) and attempt < self.max_retries:
                try:
                    wait = float(r.headers.get("retry-after", "1"))
                except ValueError:
                    wait = 1.0
                await asyncio.sleep(min(max(wait, 0.1), 30.0))
                continue
            break
        try:
            body = r.json()
        except ValueError:
            raise RemoteError(
                "bad_response", f"HTTP {r.status_code} with a body that is not JSON", r.status_code
            ) from None
        if r.status_code >= 400 or not isinstance(body, dict):
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise RemoteError(
                str(err.get("type", "http_error")), str(err.get("message", f"HTTP {r.status_code}")), r.status_code
            )
        answer = body.get("answer", body)  # accept a bare Answer or {"answer": Answer}
        if not isinstance(answer, dict) or "emotion" not in answer:
            raise RemoteError("bad_response", "the server's reply is not an answer", r.status_code)
        # The answer names the models behind it (the /v1/models id is only the profile name).
        self.model = str(answer.get("model") or self.model)
        return answer

    async def close(self) -> None:
        await self.client.aclose()
