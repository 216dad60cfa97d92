"""The deploy files say what they do: compose runs two xemo processes sharing the Redis it defines behind one port,
Prometheus scrapes both, and the Kubernetes manifest defines the Redis it points at and probes something real."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_two_processes_sharing_redis_behind_one_port() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    xemo = {n: s for n, s in services.items() if s.get("build") == "."}
    assert len(xemo) == 2
    urls = {s["environment"]["XEMO_REDIS_URL"] for s in xemo.values()}
    assert len(urls) == 1 and urlsplit(urls.pop()).hostname in services  # one Redis, defined here
    assert all("ports" not in s for s in xemo.values())  # reached only through the balancer
    published = [n for n, s in services.items() if "8000:8000" in s.get("ports", [])]
    assert len(published) == 1
    lb_conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert all(f"server {n}:8000" in lb_conf for n in xemo)
    assert {"prometheus", "grafana"} <= set(services)
    targets = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {t for c in targets["scrape_configs"] for sc in c["static_configs"] for t in sc["targets"]}
    assert scraped == {f"{n}:8000" for n in xemo}


def test_k8s_defines_its_redis_and_probes_readiness() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "xemo.yaml").read_text()))
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "xemo")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert urlsplit(env["XEMO_REDIS_URL"]).hostname in services
    redis = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "redis")
    assert redis["spec"]["template"]["metadata"]["labels"]["app"] == "redis"
    for probe in ("startupProbe", "readinessProbe"):  # /livez is always 200: it would check nothing
        assert container[probe]["httpGet"]["path"] == "/readyz"
