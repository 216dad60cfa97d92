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
    """The answer from a running server, through xemo.client (which retries 429/503 honouring Retry-After)."""

    def __init__(self, base_url: str, settings: Settings, api_key: str | None = None, max_retries: int = 5) -> None:
        from xemo.client import AsyncClient

        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.client = AsyncClient(self.base_url, api_key, timeout=settings.server.request_timeout_s + 30.0,
                                  max_retries=max_retries)
        self.model = ""

    async def start(self, ready_timeout_s: float = 300.0) -> None:
        from xemo.client import ApiError

        # A server that is still loading answers 503 on /readyz; wait for it rather than fail every clip.
        try:
            await self.client.wait_ready(ready_timeout_s)
            models = await self.client.models()
        except ApiError as e:
            raise RemoteError(e.type, e.message, e.status) from None
        except httpx.HTTPError as e:
            raise RemoteError("unreachable", f"cannot reach the server at {self.base_url}: {e}", 503) from None
        if models.data:
            self.model = models.data[0].id

    async def analyze(self, row: ManifestRow) -> dict[str, Any]:
        from xemo.client import ApiError

        try:
            answer = await self.client.analyze(video=row.video, audio=row.audio, transcript=row.transcript or None,
                                               request_id=row.id)
        except ApiError as e:
            raise RemoteError(e.type, e.message, e.status) from None
        except ValueError as e:  # a 200 whose body is not an answer (pydantic's ValidationError is a ValueError)
            raise RemoteError("bad_response", f"the server's reply is not an answer: {e}"[:300], 200) from None
        # The answer names the models behind it (the /v1/models id is only the profile name).
        self.model = answer.model or self.model
        return answer.model_dump(mode="json", exclude_unset=True)

    async def close(self) -> None:
        await self.client.close()
