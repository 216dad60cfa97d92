"""The server's StageRunner: routes each `run(stage_name, item)` of the pipeline through that stage's batcher.

The request deadline travels in a context variable (set by the request that calls the pipeline), so a stage
call made on behalf of a request carries that request's deadline into the batch queue.
"""

from __future__ import annotations

import contextvars
from typing import Any

from engines.pipeline import Pipeline
from server.batching import DynamicBatcher
from server.metrics import Metrics
from xemo.settings import ServerSettings

# loop.time() instant after which the current request's stage calls fail with Timeout.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("xemo_deadline", default=None)


class BatchingRunner:
    def __init__(self, pipeline: Pipeline, server: ServerSettings, metrics: Metrics | None = None) -> None:
        # Each running request may have several calls in flight per stage (e.g. one per frame).
        queue_cap = max(64, 32 * (server.max_running + server.max_queue))
        self.batchers = {
            name: DynamicBatcher(
                stage,
                min(server.max_batch_size, stage.max_batch_size),
                server.max_queue_delay_ms,
                queue_cap,
                metrics,
                name=name,
                nice=server.stage_nice,
            )
            for name, stage in pipeline.stages.items()
        }

    def start(self) -> None:
        for b in self.batchers.values():
            b.start()

    async def stop(self) -> None:
        for b in self.batchers.values():
            await b.stop()

    async def __call__(self, name: str, item: Any) -> Any:
        return await self.batchers[name].submit(item, deadline_var.get())

    def info(self) -> dict[str, dict[str, Any]]:
        return {
            n: {
                "max_batch_size": b.max_batch_size,
                "max_queue_delay_ms": b.max_queue_delay_s * 1000,
                "queued": b.queued,
                "batches_run": b.batches_run,
            }
            for n, b in self.batchers.items()
        }
