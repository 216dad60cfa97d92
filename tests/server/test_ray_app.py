"""The Serve application `xemo serve --ray` builds from the settings (no cluster needed to build it)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve")

from server.ray_app import build_app  # noqa: E402
from xemo.settings import load_settings  # noqa: E402


def deployments(app) -> dict:  # noqa: ANN001 - ray.serve.Application
    """{name: Deployment} of the ingress and of every deployment bound into its arguments."""
    ingress = app._bound_deployment
    _, stages, llm = ingress.init_args
    out = {"ingress": ingress, "llm": llm._bound_deployment}
    out.update({name: a._bound_deployment for name, a in stages.items()})
    return out


def test_one_deployment_per_stage_plus_ingress_and_llm_with_options_from_settings() -> None:
    s = load_settings(
        ray={
            "stage": {"num_replicas": 2, "max_ongoing_requests": 4, "max_queued_requests": 16, "num_cpus": 0.5},
            "stages": {"audio": {"num_replicas": 3, "resources": {"node_a": 0.01}}},
            "llm": {"autoscaling": True, "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6},
        }
    )
    d = deployments(build_app(s))
    assert set(d) == {"ingress", "llm", "visual", "audio", "asr"}  # every stage of the pipeline, ASR included
    assert d["asr"].num_replicas == 2  # the `stage` defaults, as for visual
    off = deployments(build_app(load_settings(asr={"enabled": False})))
    assert set(off) == {"ingress", "llm", "visual", "audio"}
    assert {n: dep.name for n, dep in d.items()} == {n: n for n in d}
    assert d["visual"].num_replicas == 2
    assert (d["visual"].max_ongoing_requests, d["visual"].max_queued_requests) == (4, 16)
    assert d["visual"].ray_actor_options["num_cpus"] == 0.5
    assert d["audio"].num_replicas == 3 and d["audio"].ray_actor_options["resources"] == {"node_a": 0.01}
    auto = d["llm"]._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 4, 6)
    # the ingress holds every stream and probe: its Ray limit sits above the app's own admission control
    assert d["ingress"].max_ongoing_requests > s.server.max_running + s.server.max_queue
    assert d["ingress"]._deployment_config.graceful_shutdown_timeout_s == s.server.drain_timeout_s


def test_a_profile_that_cannot_be_split_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="xemogpt"):
        build_app(load_settings(profile="xemogpt"))


def test_the_rayservice_manifest_names_a_real_builder_and_valid_settings(tmp_path) -> None:  # noqa: ANN001
    import importlib
    from pathlib import Path

    import yaml

    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[2] / "deploy/k8s/rayservice.yaml").read_text()))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["xemo.yaml"]
    service = next(d for d in docs if d["kind"] == "RayService")
    (tmp_path / "xemo.yaml").write_text(config)
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (application,) = serve_config["applications"]
    module, name = application["import_path"].split(":")
    builder = getattr(importlib.import_module(module), name)
    app = builder({"config": str(tmp_path / "xemo.yaml")})  # the settings in the ConfigMap validate
    d = deployments(app)
    assert d["llm"]._deployment_config.autoscaling_config.max_replicas == 2
    assert application["args"]["config"].startswith("/etc/xemo/")
