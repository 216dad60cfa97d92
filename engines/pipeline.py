"""The pipeline interface shared by every profile, the single-process server and the Ray deployment.

A profile is a set of named `Stage`s (batchable, synchronous model work) plus an async `stream()` that walks the
data path top to bottom (ingest -> perceive -> prompt -> generate -> stream) and yields events. How a stage call
is executed is the caller's choice, passed in as `run`:

- `direct_runner` calls the stage in a worker thread (CLI, tests);
- the server routes each stage through a dynamic batcher (server/batching.py);
- the Ray deployment (server/ray_app.py) routes it to a deployment handle using `@serve.batch`.

A profile that can be split across processes also builds its parts one at a time (`stage_names`, `load_stage`,
`load_llm`) and can `attach` to an LLM that lives elsewhere (a backend adapter), so a Ray stage replica loads
only its stage, the LLM replica only the LLM, and the ingress walks the same `stream()` with neither loaded.
So no stage knows about HTTP or Ray, and neither entry point copies the data path.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from engines.llm.base import LLMBackend
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

    # -- split loading (profiles whose parts may run in other processes) --------------------------------------
    def stage_names(self) -> list[str]:
        """The stages `load()` builds, known without loading anything."""
        raise NotImplementedError(f"the {self.profile} profile cannot run its stages in other processes")

    def load_stage(self, name: str) -> Stage:
        """Build one stage with its models (for a process that hosts that stage alone)."""
        raise NotImplementedError(f"the {self.profile} profile cannot run its stages in other processes")

    def load_llm(self) -> LLMBackend:
        """Load the LLM backend alone (for a process that hosts only the LLM)."""
        raise NotImplementedError(f"the {self.profile} profile cannot run its LLM in another process")

    def attach(self, llm: LLMBackend) -> None:
        """Walk the data path with an LLM that lives elsewhere (a backend adapter) and every stage run by the
        caller's runner elsewhere: nothing is loaded here, and `stages` stays empty."""
        raise NotImplementedError(f"the {self.profile} profile cannot run its parts in other processes")

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
