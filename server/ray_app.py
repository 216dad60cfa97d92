"""The Ray Serve application of `xemo serve --ray`: the same FastAPI app and pipeline, spread over deployments.

- `ingress`: the FastAPI app of server/app.py (REST, SSE, WebSocket, probes, metrics), built on the replica with
  an attach hook, so its pipeline walks the usual `stream()` with stage calls routed by `RayRunner` and the LLM
  reached through `RemoteLLM` (server/ray_calls.py). Ingest (decoding) runs here.
- one deployment per pipeline stage (`visual`, `audio`, ...: whatever `pipeline.stage_names()` lists), each
  replica loading only its stage and batching calls with `@serve.batch`;
- `llm`: the LLM backend alone in its own process, with its own continuous batch across every request the
  replica takes; its OpenMP threads may spin (`ray.llm_omp_wait_policy`, ACTIVE by default), since nothing
  else computes in that process.

Replicas, autoscaling, backpressure and resources of each come from `settings.ray` (xemo/settings.py).
`build_app(settings)` is used by the CLI; `build_app_from_config` is the `import_path` for a Serve config file
(KubeRay's RayService, deploy/k8s/rayservice.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

# Before Ray is imported anywhere in this process: no usage reporting (no network here), and keep 127.0.0.1 as
# given (without this, ray.init rewrites it to the machine's outward address).
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve import Application  # noqa: E402

from engines.llm.base import SamplingParams, Segment, Token  # noqa: E402
from engines.pipeline import Pipeline, build_pipeline  # noqa: E402
from xemo.settings import RayDeploymentSettings, RaySettings, Settings, load_settings  # noqa: E402


def stage_settings(ray_settings: RaySettings, name: str) -> RayDeploymentSettings:
    return ray_settings.stages.get(name, ray_settings.stage)


def deployment_options(d: RayDeploymentSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.max_queued_requests,
        "ray_actor_options": {"num_cpus": d.num_cpus, "resources": dict(d.resources)},
    }
    if d.autoscaling:
        opts["autoscaling_config"] = {
            "min_replicas": d.min_replicas,
            "max_replicas": max(d.max_replicas, d.min_replicas, 1),
            "initial_replicas": max(d.min_replicas, 1),
            "target_ongoing_requests": d.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = d.num_replicas
    return opts


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


@serve.deployment
class StageReplica:
    """One pipeline stage, loaded alone; concurrent calls are batched into one `run_batch`."""

    def __init__(self, settings: Settings, name: str) -> None:
        _configure_logging(settings)
        self.stage = build_pipeline(settings).load_stage(name)
        self.stage.warmup()
        self.node_id = _node_id()
        d = stage_settings(settings.ray, name)
        self.run.set_max_batch_size(min(d.max_batch_size, self.stage.max_batch_size))
        self.run.set_batch_wait_timeout_s(d.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def run(self, items: list[Any]) -> list[tuple[Any, str]]:
        outs = await asyncio.to_thread(self.stage.run_batch, items)
        return [(out, self.node_id) for out in outs]

    def node(self) -> str:
        return self.node_id


@serve.deployment
class LLMReplica:
    """The LLM backend in a process of its own. Every request this replica takes joins the backend's continuous
    batch (new sequences enter between decode steps); a cancelled call closes its stream and frees its slot."""

    def __init__(self, settings: Settings) -> None:
        _configure_logging(settings)
        # Read once, when the llama.cpp / torch OpenMP runtime loads, which is below: set it first.
        os.environ["OMP_WAIT_POLICY"] = settings.ray.llm_omp_wait_policy
        self.llm = build_pipeline(settings).load_llm()
        self.node_id = _node_id()

    def info(self) -> dict[str, Any]:
        return {"name": self.llm.name, "hidden_size": self.llm.hidden_size, "max_context": self.llm.max_context,
                "node": self.node_id, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

    async def score_choices(self, segments: list[Segment], choices: list[str]) -> tuple[dict[str, float], int]:
        scores = await self.llm.score_choices(segments, choices)
        return scores, self.llm.prompt_tokens(segments)

    async def generate(self, segments: list[Segment], params: SamplingParams) -> AsyncIterator[Token]:
        async with contextlib.aclosing(self.llm.generate(segments, params)) as stream:
            async for tok in stream:
                yield tok

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return self.llm.tokenize(text, add_special)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids)

    def embed_tokens(self, ids: list[int]) -> Any:
        return self.llm.embed_tokens(ids)

    def prompt_tokens(self, segments: list[Segment]) -> int:
        return self.llm.prompt_tokens(segments)

    def stats(self) -> dict[str, Any]:
        stats = getattr(self.llm, "stats", None)
        return dict(stats()) if callable(stats) else {}


@serve.deployment
@serve.ingress()
class Ingress:
    """The server's FastAPI app, whose pipeline reaches the stage and LLM deployments through handles."""

    def __init__(self, settings: Settings, stages: dict[str, Any], llm: Any) -> None:
        self.settings = settings
        self.stages = stages
        self.llm = llm

    def __serve_build_asgi_app__(self) -> Any:
        from server.app import create_app

        _configure_logging(self.settings)
        return create_app(self.settings, attach=self._attach)

    async def _attach(self, pipeline: Pipeline, metrics: Any) -> Any:
        from server.ray_calls import RayCalls, RayRunner, RemoteLLM

        calls = RayCalls(self.settings.ray, metrics)
        info = await calls.call("llm", self.llm.info)
        pipeline.attach(RemoteLLM(self.llm, info, calls))
        return RayRunner(calls, self.stages)


def build_app(settings: Settings) -> Application:
    """The whole Serve application: ingress -> stage deployments + llm deployment, options from settings.ray."""
    r = settings.ray
    names = build_pipeline(settings).stage_names()  # NotImplementedError for a profile that cannot be split
    stages = {
        name: StageReplica.options(name=name, **deployment_options(stage_settings(r, name))).bind(settings, name)
        for name in names
    }
    llm = LLMReplica.options(name="llm", **deployment_options(r.llm)).bind(settings)
    # Requests in flight get the drain budget to finish when the app is deleted or Serve shuts down.
    return Ingress.options(
        name="ingress", graceful_shutdown_timeout_s=settings.server.drain_timeout_s, **deployment_options(r.ingress)
    ).bind(settings, stages, llm)


def build_app_from_config(args: dict[str, Any]) -> Application:
    """Serve config `import_path: server.ray_app:build_app_from_config`; `args: {config: FILE}` names the
    settings YAML (else XEMO_CONFIG / XEMO_* in the replica's environment)."""
    return build_app(load_settings(args.get("config")))


def _configure_logging(settings: Settings) -> None:
    from server import logging as xlog

    xlog.configure(settings.log_level, settings.server.log_json)
