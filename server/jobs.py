"""One analysis request from admission to its last event, shared by the JSON, SSE and WebSocket endpoints.

`Job` admits the request, waits for a running slot, ingests the clip in a worker thread, then runs the
pipeline in a producer task (under the request's deadline) and hands its events to whichever transport consumes
them. Closing the consumer cancels the producer and releases the slot at once, counted as `cancelled`. Every
request ends exactly once with one outcome, which is counted, logged with its stage timings, and freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from engines.errors import Cancelled, Timeout
from engines.types import AnalyzeRequest, Clip, CueEvent, DoneEvent, LabelEvent, SegmentEvent, TokenEvent, event_to_dict
from server.admission import Ticket
from server.errors import ApiError, InvalidField, to_api_error
from server.lifecycle import ServerState
from server.redis_state import RedisUnavailable
from server.result_cache import ResultCache, cache_key
from server.runner import deadline_var
from xemo import schemas
from xemo.schemas import AnalyzeOptions, options_error

log = logging.getLogger("xemo.request")

MISSING_INPUT = (
    "nothing to analyse: send at least one of 'video' (a clip, with or without its own audio), 'audio' "
    "(a separate audio file) or 'transcript' (text)"
)


def parse_options(raw: dict[str, Any], model: type[AnalyzeOptions] = AnalyzeOptions) -> AnalyzeOptions:
    """Validate the client's options (form fields or the WebSocket's first frame) into typed values."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise InvalidField(options_error(e)) from None


async def _cache_put(cache: ResultCache, key: str, events: list[dict[str, Any]]) -> None:
    with contextlib.suppress(RedisUnavailable):  # counted in xemo_redis_errors_total; the answer went out anyway
        await cache.put(key, events)


class Job:
    def __init__(self, state: ServerState, request_id: str, received_at: float, transport: str) -> None:
        self.state = state
        self.request_id = request_id
        self.received_at = received_at
        self.transport = transport
        self.ticket: Ticket | None = None
        self.request: AnalyzeRequest | None = None
        self.outcome: str | None = None
        self.error: ApiError | None = None
        self.answer: dict[str, Any] | None = None
        self.timings: dict[str, float] = {}
        self.key_id: str | None = None
        self.cache_key: str | None = None  # set when the answer may be cached (greedy, cache on)
        self.cached: list[dict[str, Any]] | None = None  # the events to replay on a cache hit
        self.cache_bypassed = False  # cacheable, but the shared cache could not be asked (Redis down)
        # absolute deadline, perf_counter clock
        self.deadline = received_at + state.settings.server.request_timeout_s

    # -- before the pipeline -----------------------------------------------------------------------------------
    async def authorize(self, authorization: str | None) -> None:
        self.key_id = self.state.keys.authenticate(authorization)
        if self.key_id is not None:
            await self.state.limiter.check(self.key_id)

    def admit(self) -> None:
        self.state.check_serving()
        self.ticket = self.state.admission.enter()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.timings[stage] = seconds
        self.state.metrics.stage_duration.labels(stage=stage).observe(seconds)

    async def prepare(self, video: bytes | None, audio: bytes | None, opts: AnalyzeOptions) -> None:
        """Wait for a running slot, then ingest the clip (typed 4xx errors come from ingest)."""
        from engines.ingest import ingest

        if video is None and audio is None and opts.transcript is None:
            raise InvalidField(MISSING_INPUT)
        from engines.perception.asr.stage import asr_request_error

        if msg := asr_request_error(self.state.settings.asr, opts.asr, video is not None or audio is not None):
            raise InvalidField(msg)
        assert self.ticket is not None
        if await self._lookup(video, audio, opts):
            return  # answered from the cache: no running slot, no decoding, no model
        try:
            await asyncio.wait_for(self.ticket.start(), timeout=max(0.0, self.deadline - time.perf_counter()))
        except TimeoutError:
            raise Timeout("no capacity freed up within the request time budget") from None
        self.timings["queue"] = self.ticket.queue_time_s
        t = time.perf_counter()
        if video is None and audio is None:
            clip = Clip.text_only()  # the transcript alone: nothing to decode
        else:
            clip = await asyncio.wait_for(
                asyncio.to_thread(ingest, video, audio, self.state.settings.ingest),
                timeout=max(0.0, self.deadline - time.perf_counter()),
            )
            self.observe_stage("ingest", time.perf_counter() - t)
        for stage, seconds in clip.timings.items():  # inside the decoder worker: demux, video_decode, audio_decode
            self.observe_stage(stage, seconds)
        self.request = AnalyzeRequest(
            clip=clip,
            transcript=opts.transcript,
            labels=opts.labels,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            asr=opts.asr,
            id=self.request_id,
            received_at=self.received_at,
        )

    async def _lookup(self, video: bytes | None, audio: bytes | None, opts: AnalyzeOptions) -> bool:
        cache, g = self.state.result_cache, self.state.settings.generation
        temperature = g.temperature if opts.temperature is None else opts.temperature
        if cache is None or temperature != 0:
            return False
        options = {"transcript": opts.transcript, "labels": opts.labels, "max_tokens": opts.max_tokens, "asr": opts.asr}
        args = (video, audio, options, self.key_id or "", self.state.fingerprint)
        big = sum(len(x) for x in (video, audio) if x is not None) > 1 << 20
        # hashing tens of MB takes tens of ms: off the loop
        key = await asyncio.to_thread(cache_key, *args) if big else cache_key(*args)
        try:
            self.cached = await cache.get(key)
        except RedisUnavailable:  # answer without the cache rather than fail
            self.cache_bypassed = True
            self.state.metrics.result_cache.labels(result="bypass").inc()
            return False
        self.cache_key = key
        self.state.metrics.result_cache.labels(result="miss" if self.cached is None else "hit").inc()
        return self.cached is not None

    @property
    def cache_header(self) -> dict[str, str]:
        """X-Xemo-Cache: hit | miss | bypass for cacheable requests, nothing otherwise."""
        if self.cache_bypassed:
            return {"X-Xemo-Cache": "bypass"}
        if self.cache_key is None:
            return {}
        return {"X-Xemo-Cache": "miss" if self.cached is None else "hit"}

    async def _replay(self) -> AsyncIterator[dict[str, Any]]:
        """A cache hit: the first answer's events under this request's id and timings."""
        assert self.cached is not None
        m, first_token = self.state.metrics, True
        for ev in self.cached:
            now = time.perf_counter()
            if ev["type"] == "label":
                m.time_to_label.observe(now - self.received_at)
                self.timings["time_to_label_s"] = now - self.received_at
            elif ev["type"] == "token" and first_token:
                first_token = False
                m.time_to_first_token.observe(now - self.received_at)
                self.timings["time_to_first_token_s"] = now - self.received_at
            elif ev["type"] == "done":
                answer = ev["answer"]
                answer["id"] = self.request_id
                total = now - self.received_at
                answer["timings"] = {"time_to_label_s": self.timings.get("time_to_label_s", total), "total_s": total}
                answer["cached"] = True
                m.e2e_latency.observe(total)
                self.timings["e2e_s"] = total
                self.answer = answer
                self.finish("ok")
            yield ev

    # -- the pipeline ------------------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Event dicts (label, cue..., token..., done) or one final error dict; closing it cancels the work."""
        if self.cached is not None:
            try:
                async for ev in self._replay():
                    yield ev
            finally:
                if self.outcome is None:
                    self.finish("cancelled")
            return
        state, req = self.state, self.request
        assert state.pipeline is not None and state.runner is not None and req is not None
        loop = asyncio.get_running_loop()
        deadline_loop = loop.time() + (self.deadline - time.perf_counter())
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        end = object()

        async def produce() -> None:
            deadline_var.set(deadline_loop)
            try:
                async with asyncio.timeout_at(deadline_loop):
                    stream = state.pipeline.stream(req, run=state.runner)
                    async with contextlib.aclosing(stream) as it:
                        async for ev in it:
                            await queue.put(ev)
                await queue.put(end)
            except TimeoutError:
                await queue.put(Timeout("the request did not finish within the server's time budget"))
            except Exception as e:
                await queue.put(e)

        producer = loop.create_task(produce(), name=f"job-{self.request_id}")
        m = state.metrics
        sent: list[dict[str, Any]] = []  # what the client got, kept for the result cache
        last_token: float | None = None
        n_tokens = 0
        try:
            while True:
                ev = await queue.get()
                now = time.perf_counter()
                if ev is end:
                    raise RuntimeError("pipeline ended without a done event")
                if isinstance(ev, BaseException):
                    raise ev
                if isinstance(ev, LabelEvent):
                    m.time_to_label.observe(now - self.received_at)
                    self.timings["time_to_label_s"] = now - self.received_at
                elif isinstance(ev, TokenEvent):
                    n_tokens += 1
                    if last_token is None:
                        m.time_to_first_token.observe(now - self.received_at)
                        self.timings["time_to_first_token_s"] = now - self.received_at
                    else:
                        m.inter_token_latency.observe(now - last_token)
                    last_token = now
                elif isinstance(ev, DoneEvent):
                    done = schemas.wire_event(event_to_dict(ev))  # checked against the published schema first
                    self._done(ev, n_tokens, now, done["answer"])
                    if self.cache_key is not None and state.result_cache is not None:
                        state.spawn(_cache_put(state.result_cache, self.cache_key, [*sent, done]), "cache-put")
                    yield done
                    return
                elif not isinstance(ev, CueEvent | SegmentEvent):
                    continue
                d = schemas.wire_event(event_to_dict(ev))
                if self.cache_key is not None:
                    sent.append(d)
                yield d
        except Exception as e:
            err = self.fail(e)
            yield err.event(self.request_id)
        finally:
            if not producer.done():
                producer.cancel()
            if self.outcome is None:  # the consumer went away (disconnect, WebSocket closed, cancelled)
                self.finish("cancelled")
            with contextlib.suppress(BaseException):
                await asyncio.wait({producer}, timeout=1.0)

    def _done(self, ev: DoneEvent, n_tokens: int, now: float, wire_answer: dict[str, Any]) -> None:
        answer = ev.answer
        usage = answer.usage or {}
        m = self.state.metrics
        m.generated_tokens.inc(int(usage.get("generated_tokens", n_tokens)))
        m.prompt_tokens.inc(int(usage.get("prompt_tokens", 0)))
        batched = set(self.state.runner.batchers) if self.state.runner else set()
        for k, v in (answer.timings or {}).items():
            # the pipeline's own per-request stage timings; batched stages are observed per batch already
            if k.endswith("_s") or k in batched or not isinstance(v, int | float):
                continue
            m.stage_duration.labels(stage=k).observe(v)
        self.timings.update({f"pipeline.{k}": v for k, v in (answer.timings or {}).items()})
        m.e2e_latency.observe(now - self.received_at)
        self.timings["e2e_s"] = now - self.received_at
        self.answer = wire_answer
        self.finish("ok")

    # -- the end -----------------------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> ApiError:
        if isinstance(exc, asyncio.CancelledError):
            exc = Cancelled("request cancelled")
        self.error = to_api_error(exc)
        self.finish(self.error.outcome)
        return self.error

    def finish(self, outcome: str) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        if self.ticket is not None:
            self.ticket.release()
        self.state.metrics.requests_total.labels(outcome=outcome).inc()
        extra: dict[str, Any] = {
            "outcome": outcome,
            "transport": self.transport,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.key_id:
            extra["key_id"] = self.key_id
        if self.error is not None:
            extra["error_type"] = self.error.type
        log.info("request finished", extra={"request_id": self.request_id, **extra})
