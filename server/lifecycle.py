"""What the server holds for its lifetime, and its life: load + warmup off the loop at startup, drain on SIGTERM.

Startup returns at once so the probes answer while the models load in a worker thread (`/readyz` is 503 until
`pipeline.load()` and `pipeline.warmup()` have finished). Given an `attach` hook (the Ray ingress), the pipeline
loads nothing itself: the hook attaches it to stages and an LLM that run elsewhere and returns their runner.
Draining flips `/readyz` to 503, refuses new requests with 503 + Retry-After and waits (up to `drain_timeout_s`)
for the requests in flight to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engines.ingest.api import warmup as ingest_warmup
from engines.pipeline import Pipeline, build_pipeline
from server import redis_state
from server.admission import Admission
from server.auth import ApiKeys
from server.errors import Draining, NotReady
from server.job_queue import JobQueue, build_job_queue
from server.metrics import Metrics
from server.rate_limit import build_rate_limiter
from server.result_cache import build_result_cache, settings_fingerprint
from server.runner import BatchingRunner
from xemo.settings import Settings

log = logging.getLogger("xemo.server")


# attach(pipeline, metrics) -> runner: makes an unloaded pipeline walk stages and an LLM hosted elsewhere.
Attach = Callable[[Pipeline, Metrics], Awaitable[Any]]


class ServerState:
    def __init__(self, settings: Settings, attach: Attach | None = None) -> None:
        self.settings = settings
        self.attach = attach
        s = settings.server
        self.metrics = Metrics()
        self.admission = Admission(s.max_running, s.max_queue, s.retry_after_s, self.metrics)
        self.keys = ApiKeys(s)
        # Shared by every process when redis_url is set, else in-process (same interfaces either way).
        self.redis = redis_state.from_settings(settings, self.metrics)
        self.limiter = build_rate_limiter(settings, self.redis)
        self.result_cache = build_result_cache(settings, self.redis)
        self.fingerprint = ""  # of the settings and models that shape an answer; set once the pipeline is built
        self.jobs: JobQueue | None = build_job_queue(self)
        self.background: set[asyncio.Task] = set()  # fire-and-forget work (cache writes), held until it ends
        self.pipeline: Pipeline | None = None
        self.runner: Any = None  # BatchingRunner, or the attach hook's runner
        self.ready = False
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._load_task: asyncio.Task | None = None

    @property
    def draining(self) -> bool:
        return self.admission.draining

    # -- startup / shutdown ------------------------------------------------------------------------------------
    def start_loading(self) -> None:
        if self.redis is not None:
            self.redis.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="xemo-load")

    async def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            pipeline = await asyncio.to_thread(build_pipeline, self.settings)
            if self.attach is not None:
                runner = await self.attach(pipeline, self.metrics)
                await asyncio.to_thread(pipeline.warmup)
            else:
                await asyncio.to_thread(pipeline.load)
                await asyncio.to_thread(pipeline.warmup)
                runner = BatchingRunner(pipeline, self.settings.server, self.metrics)
            await asyncio.to_thread(ingest_warmup, self.settings.ingest)  # decoder workers started, not on request 1
            if self.result_cache is not None:
                self.fingerprint = await asyncio.to_thread(settings_fingerprint, self.settings, pipeline.model)
            self.pipeline = pipeline
            self.runner = runner
            self.runner.start()
            llm = getattr(pipeline, "llm", None)
            if llm is not None and callable(getattr(llm, "stats", None)):
                self.metrics.watch_llm(llm.stats)
            if llm is not None and isinstance(getattr(llm, "step_listeners", None), list):
                # continuous batching: sequences per decode step (called from the LLM's worker thread)
                decode_batch = self.metrics.batch_size.labels(stage="decode")
                llm.step_listeners.append(decode_batch.observe)
            self.load_seconds = time.perf_counter() - t0
            self.ready = True
            if self.jobs is not None:
                self.jobs.start()
            log.info("models loaded and warmed up", extra={"load_s": round(self.load_seconds, 3), **pipeline.info()})
        except Exception as e:  # readiness reports it; the process stays up so operators can see why
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("model loading failed", exc_info=e)

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def close(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.jobs is not None:
            await self.jobs.stop()
        if self.background:
            await asyncio.wait(set(self.background), timeout=2.0)
        if self.runner is not None:
            await self.runner.stop()
        if self.pipeline is not None:
            await asyncio.to_thread(self.pipeline.close)
        if self.redis is not None:
            await self.redis.close()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait for the work in flight; True if it all finished within the budget."""
        self.admission.draining = True
        if self.jobs is not None:
            self.jobs.stop_taking()  # jobs in flight finish within the budget; the rest stay queued for others
        log.info("draining", extra={"in_flight": self.admission.in_flight, "budget_s": timeout_s})
        done = await self.admission.wait_idle(timeout_s)
        log.info("drained" if done else "drain budget exhausted", extra={"in_flight": self.admission.in_flight})
        return done

    # -- per request -------------------------------------------------------------------------------------------
    def check_serving(self) -> None:
        """Raise the 503 that applies when new requests cannot be served now."""
        retry = self.settings.server.retry_after_s
        if self.draining:
            raise Draining("server is draining for shutdown; retry on another instance", retry_after_s=retry)
        if not self.ready:
            why = "model loading failed" if self.load_error else "models are still loading"
            raise NotReady(f"server not ready: {why}", retry_after_s=retry if not self.load_error else 30.0)
        if self.pipeline is not None and not (health := self.pipeline.health())["ready"]:
            raise NotReady(f"server not ready: {health['reason']}", retry_after_s=30.0)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        a = self.admission
        health = self.pipeline.health() if self.ready and self.pipeline is not None else None
        checks = {
            "models_loaded": self.ready,
            "runtime_on_device": bool(health and health["ready"]),
            "not_draining": not self.draining,
            "queue_not_saturated": not a.saturated,
        }
        body: dict[str, Any] = {
            "status": "ready" if all(checks.values()) else "not_ready",
            "checks": checks,
            "running": a.running,
            "waiting": a.waiting,
        }
        if health is not None:
            body["runtime"] = health
        if self.redis is not None:  # reported, never a reason to be unready: requests still get answered
            body["redis"] = self.redis.status()
        if self.load_error:
            body["load_error"] = self.load_error
        return all(checks.values()), body
