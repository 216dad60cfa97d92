"""The pipeline interface shared by every profile, the single-process server and the Ray deployment.

A profile is a set of named `Stage`s (batchable, synchronous model work) plus an async `stream()` that walks the
data path top to bottom (ingest -> perceive -> prompt -> generate -> stream) and yields events. How a stage call
is executed is the caller's choice, passed in as `run`:

- `direct_runner` calls the stage in a worker thread (CLI, tests);
- the server routes each stage through a dynamic batcher (server/batching.py);
- the Ray deployment routes it to a deployment handle using `@serve.batch`.

So no stage knows about HTTP or Ray, and neither entry point copies the data path.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from engines.types import AnalyzeRequest, Answer, DoneEvent, Event
from xemo.settings import Settings


class Stage(abc.ABC):
    """Batchable model work. `run_batch` is synchronous (runs off the event loop) and order-preserving."""

    name: str
    max_batch_size: int = 8

    @abc.abstractmethod
    def run_batch(self, items: list[Any]) -> list[Any]: ...

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run once at startup so the first request does not pay for lazy initialisation."""


# run(stage_name, item) -> result; awaited by the pipeline for each stage call.
StageRunner = Callable[[str, Any], Awaitable[Any]]


class Pipeline(abc.ABC):
    profile: str
    model: str  # human-readable description of the models that produce the answer

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stages: dict[str, Stage] = {}

    @abc.abstractmethod
    def load(self) -> None:
        """Load every model (blocking). Called once, off the event loop."""

    def warmup(self) -> None:
        for stage in self.stages.values():
            stage.warmup()

    @abc.abstractmethod
    def stream(self, request: AnalyzeRequest, run: StageRunner | None = None) -> AsyncIterator[Event]:
        """Yield LabelEvent, CueEvents, TokenEvents, then DoneEvent. Cancelling the consumer stops the work."""

    def direct_runner(self) -> StageRunner:
        async def run(name: str, item: Any) -> Any:
            stage = self.stages[name]
            (out,) = await asyncio.to_thread(stage.run_batch, [item])
            return out

        return run

    async def analyze(self, request: AnalyzeRequest, run: StageRunner | None = None) -> Answer:
        async for ev in self.stream(request, run):
            if isinstance(ev, DoneEvent):
                return ev.answer
        raise RuntimeError("pipeline ended without a done event")

    def info(self) -> dict[str, Any]:
        return {"profile": self.profile, "model": self.model, "stages": sorted(self.stages)}

    def health(self) -> dict[str, Any]:
        """For /readyz, cheap enough to call on every probe: is every runtime on the device it was asked for?
        {"ready": bool, "reason": str | None, ...details}. Profiles with CPU-only runtimes have nothing to lose."""
        return {"ready": True, "reason": None, "device": "cpu"}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and threads."""


def build_pipeline(settings: Settings) -> Pipeline:
    """The profile named in the settings, not yet loaded."""
    if settings.profile == "lite":
        from engines.lite.pipeline import LitePipeline

        return LitePipeline(settings)
    from engines.xemogpt.pipeline import XEmoGPTPipeline

    return XEmoGPTPipeline(settings)
