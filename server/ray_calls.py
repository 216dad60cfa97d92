"""The ingress side of the Ray layout: stage calls and LLM calls made through Serve deployment handles.

- `RayRunner` is the pipeline's StageRunner: `run(stage, item)` becomes a call to that stage's deployment (whose
  replicas batch with `@serve.batch`).
- `RemoteLLM` is an `LLMBackend` adapter: the pipeline scores and generates through it exactly as it would with
  a local backend, while the model and its continuous batch live in the LLM deployment's own process.

Both go through `RayCalls`, which turns Ray's failures into the server's errors: a replica that died (killed,
node lost) is retried a few times with backoff, then answered 503; a deployment whose queue is full
(`max_queued_requests`) is 503 with Retry-After; an exception raised by the stage itself is re-raised as the
stage raised it. Cancelling the caller (client disconnect) cancels the Ray call, and with it the replica's work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from engines.errors import Overloaded
from engines.llm.base import LLMBackend, SamplingParams, Segment, Token
from server.metrics import Metrics
from xemo.settings import RaySettings

log = logging.getLogger("xemo.ray")


class ReplicaLost(Overloaded):
    """Every attempt found the deployment's replica gone (killed, or its node lost) before it answered."""

    type = "replica_unavailable"


def _replica_gone_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError

    return (RayActorError, ActorUnavailableError, ReplicaUnavailableError)


class RayCalls:
    """One place for how the ingress calls a deployment: retries, error mapping, cancellation, metrics."""

    def __init__(self, settings: RaySettings, metrics: Metrics) -> None:
        self.retries = settings.stage_retries
        self.backoff_s = settings.retry_backoff_s
        self.metrics = metrics

    async def call(self, deployment: str, method: Any, *args: Any) -> Any:
        """`await method.remote(*args)`, retried while the replica is gone."""
        from ray.exceptions import RayTaskError
        from ray.serve.exceptions import BackPressureError

        gone = _replica_gone_errors()
        in_flight = self.metrics.ray_in_flight.labels(deployment=deployment)
        for attempt in range(self.retries + 1):
            in_flight.inc()
            response = method.remote(*args)
            try:
                return await response
            except asyncio.CancelledError:
                response.cancel()  # the client went away: stop the replica's work too
                raise
            except BackPressureError:
                self.count(deployment, "-", "backpressure")
                raise Overloaded(f"the {deployment} deployment is at capacity; retry later") from None
            except RayTaskError as e:  # the stage's own exception, wrapped by Ray: hand back the original
                cause = e.cause
                raise (cause if isinstance(cause, Exception) else e) from None
            except gone as e:
                self.count(deployment, "-", "replica_lost")
                if attempt == self.retries:
                    raise ReplicaLost(
                        f"the {deployment} deployment lost its replica while answering; retry shortly",
                        retry_after_s=max(1.0, self.backoff_s),
                    ) from None
                log.warning("ray replica lost, retrying", extra={"deployment": deployment, "attempt": attempt + 1,
                                                                  "error": type(e).__name__})
                await asyncio.sleep(self.backoff_s * 2**attempt)
            finally:
                in_flight.dec()
        raise AssertionError("unreachable")

    def count(self, deployment: str, node: str, outcome: str) -> None:
        self.metrics.ray_calls.labels(deployment=deployment, node=node[:12], outcome=outcome).inc()


class RayRunner:
    """The StageRunner over stage deployments. Their replicas return (result, node id) so the ingress can count
    which node served each call (`xemo_ray_calls_total{node}`)."""

    # The server observes per-batch stage durations only for its own batchers; with none here it records the
    # pipeline's per-request stage timings instead (server/jobs.py).
    batchers: dict[str, Any] = {}

    def __init__(self, calls: RayCalls, handles: dict[str, Any]) -> None:
        self.calls = calls
        self.handles = handles

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def __call__(self, name: str, item: Any) -> Any:
        out, node = await self.calls.call(name, self.handles[name].run, item)
        self.calls.count(name, node, "ok")
        return out

    def info(self) -> dict[str, dict[str, Any]]:
        return {n: {"ray_deployment": n} for n in self.handles}


# Blocking calls (tokenize & co. are synchronous in the LLMBackend interface) wait from this pool: Serve refuses
# a blocking `.result()` on a thread that runs an event loop.
_BLOCKING = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="xemo-ray-sync")


class RemoteLLM(LLMBackend):
    """An LLMBackend whose model runs in the LLM deployment. Generation streams tokens from the replica; closing
    the stream cancels the replica's generator, which frees its slot in the continuous batch."""

    def __init__(self, handle: Any, info: dict[str, Any], calls: RayCalls) -> None:
        self.handle = handle
        self.calls = calls
        self.name = info["name"]
        self.hidden_size = info["hidden_size"]
        self.max_context = info["max_context"]
        # prompt text -> token count, learnt from score_choices (the pipeline reports the count of a prompt it
        # has just scored), so `prompt_tokens` rarely needs a blocking round trip
        self._counts: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._stats: dict[str, Any] = {}
        self._stats_task: asyncio.Task | None = None

    def stats(self) -> dict[str, Any]:
        """The replica's continuous-batching counters ({"running", "waiting", ...}) for /metrics. Called at scrape
        time on the event loop, which must not wait for the replica: this returns the last snapshot and fetches
        the next one in the background, so each scrape shows the state as of the previous one."""
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
            loop = asyncio.get_running_loop()
            if self._stats_task is None or self._stats_task.done():
                self._stats_task = loop.create_task(self._refresh_stats())
        return dict(self._stats)

    async def _refresh_stats(self) -> None:
        try:
            self._stats = await asyncio.wait_for(self.handle.stats.remote(), timeout=5.0)
        except Exception:  # a busy or lost replica: keep the last snapshot
            pass

    def _blocking(self, method: str, *args: Any) -> Any:
        call: Callable[[], Any] = lambda: getattr(self.handle, method).remote(*args).result()  # noqa: E731
        return _BLOCKING.submit(call).result()

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return self._blocking("tokenize", text, add_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._blocking("detokenize", list(ids))

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        return self._blocking("embed_tokens", list(ids))

    def prompt_tokens(self, segments: list[Segment]) -> int:
        key = _text_key(segments)
        if key is not None and key in self._counts:
            return self._counts[key]
        return self._blocking("prompt_tokens", segments)

    async def score_choices(self, segments: list[Segment], choices: list[str]) -> dict[str, float]:
        scores, n_prompt = await self.calls.call("llm", self.handle.score_choices, segments, choices)
        key = _text_key(segments)
        if key is not None:
            self._counts[key] = n_prompt
            while len(self._counts) > 256:
                self._counts.popitem(last=False)
        return scores

    async def generate(self, segments: list[Segment], params: SamplingParams) -> AsyncIterator[Token]:
        from ray.exceptions import RayTaskError

        gone = _replica_gone_errors()
        in_flight = self.calls.metrics.ray_in_flight.labels(deployment="llm")
        in_flight.inc()
        stream = self.handle.options(stream=True).generate.remote(segments, params)
        finished = False
        try:
            async for tok in stream:
                yield tok
            finished = True
        except RayTaskError as e:
            cause = e.cause
            raise (cause if isinstance(cause, Exception) else e) from None
        except gone:
            self.calls.count("llm", "-", "replica_lost")
            # Tokens may already have reached the client: a retry would repeat them, so this one fails cleanly.
            raise ReplicaLost("the LLM deployment lost its replica while generating; retry shortly") from None
        finally:
            in_flight.dec()
            if not finished:
                with contextlib.suppress(Exception):
                    stream.cancel()  # closed early (client gone, grounding gate shut): free the replica's slot


def _text_key(segments: list[Segment]) -> tuple[str, ...] | None:
    return tuple(segments) if all(isinstance(s, str) for s in segments) else None  # type: ignore[arg-type]
