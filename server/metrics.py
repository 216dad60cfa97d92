"""Every Prometheus metric the server exports, one definition each, with what it measures and over which interval.

Names follow vLLM's (prefix `xemo_`, never `:`). All request latencies are measured from the moment the HTTP
request (or WebSocket handshake) reached the server (`received_at`, set by the request-context middleware), so
they include upload, queueing and ingest. Latency buckets reach 10 minutes so a p99 never saturates at 60 s.
Each `Metrics` owns its registry, so two apps in one process never collide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

# Seconds; past a minute on purpose (vLLM once capped at 60 s and its p99 became meaningless).
LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    180.0,
    300.0,
    600.0,
)
ITL_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    60.0,
    120.0,
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)

# requests_total{outcome}: every value is pre-created so a scrape shows 0 before the first event.
OUTCOMES = (
    "ok",
    "rejected_overload",
    "rate_limited",
    "too_large",
    "bad_media",
    "bad_request",
    "unauthorized",
    "cancelled",
    "timeout",
    "error",
)

# xemo_redis_errors_total{op}: pre-created so a scrape shows 0 before the first error.
REDIS_OPS = ("ping", "cache_get", "cache_put", "rate_limit", "jobs")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Gauges, sampled at scrape time.
        self.requests_running = Gauge(
            "xemo_requests_running", "Requests holding a running slot (ingest + pipeline).", registry=r
        )
        self.requests_waiting = Gauge(
            "xemo_requests_waiting", "Requests admitted but waiting for a running slot (includes upload).", registry=r
        )
        # Histograms, one observation per request unless stated.
        self.time_to_first_token = Histogram(
            "xemo_time_to_first_token_seconds",
            "HTTP receipt -> first explanation token sent.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_label = Histogram(
            "xemo_time_to_label_seconds", "HTTP receipt -> emotion label known.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.inter_token_latency = Histogram(
            "xemo_inter_token_latency_seconds",
            "Between consecutive explanation tokens (one per gap).",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "xemo_e2e_request_latency_seconds",
            "HTTP receipt -> done event / response body (ok requests).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "xemo_request_queue_time_seconds",
            "Admitted -> running slot acquired (waiting for capacity).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "xemo_stage_duration_seconds",
            "Wall time of one stage execution: one batch for batched stages, one request for upload/ingest (and "
            "its parts demux/video_decode/audio_decode, timed in the decoder worker) and for the pipeline's own "
            "per-request timings (prefill, decode, ...).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "xemo_batch_size",
            'Items per executed batch of a batched stage; stage="decode" counts sequences per LLM decode step.',
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        # Counters.
        self.requests_total = Counter(
            "xemo_requests",
            "Finished analyses (/v1/analyze, /v1/stream and async jobs) by outcome.",
            ["outcome"],
            registry=r,
        )
        for o in OUTCOMES:
            self.requests_total.labels(outcome=o)
        self.generated_tokens = Counter("xemo_generated_tokens", "Explanation tokens generated.", registry=r)
        self.prompt_tokens = Counter("xemo_prompt_tokens", "Prompt tokens (text + soft tokens) prefilled.", registry=r)
        self.result_cache = Counter(
            "xemo_result_cache_lookups", "Result cache lookups of cacheable (greedy) requests.", ["result"], registry=r
        )
        for res in ("hit", "miss", "bypass"):  # bypass: the shared (Redis) cache could not be asked
            self.result_cache.labels(result=res)
        # Redis (server/redis_state.py): shared cache, rate limits, async jobs.
        self.redis_up = Gauge(
            "xemo_redis_up", "1 while this process reaches Redis (0: cache bypassed, limits per setting).", registry=r
        )
        self.redis_errors = Counter(
            "xemo_redis_errors", "Failed or timed-out Redis commands, by what they were for.", ["op"], registry=r
        )
        for op in REDIS_OPS:
            self.redis_errors.labels(op=op)
        self.jobs_backlog = Gauge(
            "xemo_jobs_backlog",
            "Async jobs of the whole deployment not yet finished, by state (read from Redis every few seconds).",
            ["state"],
            registry=r,
        )
        for st in ("queued", "running"):
            self.jobs_backlog.labels(state=st)
        self.jobs_total = Counter(
            "xemo_jobs",
            "Async job events seen by this process: submitted, started, taken_over (a dead process's job started "
            "again), done, failed.",
            ["event"],
            registry=r,
        )
        for ev in ("submitted", "started", "taken_over", "done", "failed"):
            self.jobs_total.labels(event=ev)

        # The Ray layout only (`xemo serve --ray`), as seen from this ingress replica.
        self.ray_in_flight = Gauge(
            "xemo_ray_calls_in_flight",
            "Calls this ingress has made to a Ray deployment (stage or llm) and not yet had answered: queued in Ray "
            "or running on a replica.",
            ["deployment"],
            registry=r,
        )
        self.ray_calls = Counter(
            "xemo_ray_calls",
            'Finished calls to Ray deployments by outcome (ok, replica_lost, backpressure) and, for ok stage calls, '
            'the node that served them (its id\'s first 12 hex digits; "-" otherwise).',
            ["deployment", "node", "outcome"],
            registry=r,
        )

    def watch_llm(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export the LLM backend's own continuous-batching counters (`stats()`) as `xemo_llm_<key>` gauges."""
        self.registry.register(_LLMStatsCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LLMStatsCollector:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list:
        return []  # dynamic keys: do not let the registry call collect() at registration

    def collect(self):  # noqa: ANN201 - prometheus_client protocol
        try:
            stats = self._stats() or {}
        except Exception:  # a scrape must never fail because of the backend
            return
        for key, value in sorted(stats.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = "xemo_llm_" + "".join(c if c.isalnum() else "_" for c in str(key))
            yield GaugeMetricFamily(name, f"LLM backend stat {key!r} (continuous batching).", value=float(value))
