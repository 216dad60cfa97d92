"""`xemo serve --ray` with no cluster address: it starts its own local Ray, serves, and on SIGTERM stops every
Ray process it started and exits 0. Also: a client that disconnects mid-stream cancels the LLM's sequence."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from servers import ServerProcess, start_server

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, as {pid: start time} (the start time tells a reused pid apart)."""
    children: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(d))
        start[int(d)] = fields[19]
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = start[c]
            todo.append(c)
    return out


def alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    config = {
        "server": {"max_num_seqs": 2},
        "lite": {"n_threads": 1},
        "ray": {"num_cpus": 2, "object_store_mb": 96, "llm_omp_wait_policy": "PASSIVE"},
    }
    path = tmp_path_factory.mktemp("ray-local") / "xemo.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"XEMO_CONFIG": str(path), "RAY_TMPDIR": tempfile.mkdtemp(prefix="xrayl", dir="/tmp")}
    srv = start_server(tmp_path_factory, "ray-local", env, args=["--ray"], ready_timeout=420)
    yield srv
    srv.stop(90)


def test_disconnect_cancels_the_llm_sequence(ray_server: ServerProcess, face_mp4: Path) -> None:
    def llm_running() -> int:
        """Sequences in the LLM replica's own batch (xemo_llm_running, fetched from the replica)."""
        for _ in range(2):  # the ingress shows the snapshot fetched at the previous scrape
            text = httpx.get(ray_server.url + "/metrics", timeout=30).text
            time.sleep(0.3)
        m = re.search(r"^xemo_llm_running (\S+)$", text, re.M)
        assert m, "the LLM replica's stats are not exported"
        return int(float(m[1]))

    with httpx.stream("POST", ray_server.url + "/v1/analyze", files={"video": ("c.mp4", face_mp4.read_bytes())},
                      data={"stream": "true", "max_tokens": "400"}, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: token"):
                break  # generation has started: the client goes away here
        if llm_running() == 0:
            pytest.skip("the explanation was finished before the client could leave (nothing left to cancel)")
    # The ingress cancels its stream, and the LLM replica's generator, which frees the backend's slot.
    deadline = time.monotonic() + 60
    while llm_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert llm_running() == 0


def test_sigterm_stops_every_ray_process_it_started(ray_server: ServerProcess, face_mp4: Path) -> None:
    r = httpx.post(ray_server.url + "/v1/analyze", files={"video": ("c.mp4", face_mp4.read_bytes())},
                   data={"max_tokens": "4"}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["emotion"]["label"]
    procs = descendants(ray_server.proc.pid)
    assert len(procs) >= 5  # gcs_server, raylet, the Serve controller, proxy and replicas at least
    ray_server.stop(90)
    assert ray_server.proc.returncode == 0, ray_server.log_tail()
    deadline = time.monotonic() + 30
    while (left := [p for p, t in procs.items() if alive(p, t)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left
