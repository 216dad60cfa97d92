"""State shared through Redis by two real server processes: the result cache (per tenant), the rate limit, async
jobs (readable from either process, only by their API key, idempotent, taken over when their process dies), and
what happens when Redis itself dies under load and comes back.

A private redis-server on a free port, started here, so it can be killed; the two servers share it. The tests
run in file order: the last two kill things."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from servers import RedisProcess, ServerProcess

from server.auth import key_id

pytestmark = pytest.mark.slow

KEYS = {"a": "key-tenant-a", "b": "key-tenant-b", "load": "key-load", "limit": "key-limit"}
BURST = 30
FORM = {"max_tokens": "12", "temperature": "0"}
PREFIX = "xt"
NO_CLIP = {"labels": (None, "happy,sad")}  # multipart, but nothing to analyse: 422 after the limit check


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    r = RedisProcess(tmp_path_factory.mktemp("redis") / "redis.log")
    yield r
    r.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, private_redis: RedisProcess) -> Iterator[list[ServerProcess]]:
    env = {
        "XEMO_REDIS_URL": private_redis.url,
        "XEMO_REDIS__KEY_PREFIX": PREFIX,
        "XEMO_REDIS__RETRY_INTERVAL_S": "0.5",
        # generous: on a loaded test box a short timeout counts a busy event loop as a slow Redis
        "XEMO_REDIS__SOCKET_TIMEOUT_S": "3",
        "XEMO_REDIS__CONNECT_TIMEOUT_S": "3",
        "XEMO_SERVER__RESULT_CACHE_ENTRIES": "16",
        "XEMO_SERVER__API_KEYS": json.dumps(list(KEYS.values())),
        "XEMO_SERVER__RATE_LIMIT_PER_S": "0.01",
        "XEMO_SERVER__RATE_LIMIT_BURST": str(BURST),
        "XEMO_JOBS__CLAIM_IDLE_S": "3",
        "XEMO_JOBS__CONCURRENCY": "1",
    }
    if importlib.util.find_spec("llama_cpp") is None:  # the same GGUF model on the other backend
        env["XEMO_LITE__LLM_BACKEND"] = "transformers"
    logs = tmp_path_factory.mktemp("server")
    servers = [ServerProcess(env, logs / f"shared-{name}.log") for name in ("a", "b")]  # both load at once
    try:
        for s in servers:
            s.wait_ready(timeout=600)  # two loading at once on a small shared box take a while
        yield servers
    finally:
        for s in servers:
            s.stop()


def post(url: str, clip: bytes, who: str, **form: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/analyze", files={"video": ("c.mp4", clip)}, data={**FORM, **form}, headers=auth(who), timeout=180
    )


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_the_cache_is_shared_by_processes_but_not_by_tenants(pair: list[ServerProcess], testsrc_mp4: Path) -> None:
    a, b = pair
    clip = testsrc_mp4.read_bytes()
    first = post(a.url, clip, "a", transcript="shared cache")
    assert first.status_code == 200 and first.headers["x-xemo-cache"] == "miss"
    again = post(b.url, clip, "a", transcript="shared cache")  # the other process answers from Redis
    assert again.status_code == 200 and again.headers["x-xemo-cache"] == "hit" and again.json()["cached"] is True
    assert again.json()["explanation"] == first.json()["explanation"]
    other = post(b.url, clip, "b", transcript="shared cache")  # another API key never sees that entry
    assert other.status_code == 200 and other.headers["x-xemo-cache"] == "miss" and "cached" not in other.json()
    for s in pair:
        body = httpx.get(s.url + "/readyz").json()
        assert body["status"] == "ready" and body["redis"] == {"status": "ok"}


def test_the_rate_limit_is_shared_and_atomic(pair: list[ServerProcess]) -> None:
    # Cheap requests (a form without a clip: 422 after the limit check), alternating between the processes and
    # sent concurrently: together they get the burst exactly once, not once per process.
    statuses: list[int] = []
    lock = threading.Lock()

    def hit(i: int) -> None:
        r = httpx.post(pair[i % 2].url + "/v1/analyze", files=NO_CLIP, headers=auth("limit"), timeout=30)
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(BURST + 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = [metric(s.url, 'xemo_redis_errors_total{op="rate_limit"}') for s in pair]
    assert statuses.count(422) == BURST and statuses.count(429) == 6, (statuses, errors)
    r = httpx.post(pair[1].url + "/v1/analyze", files=NO_CLIP, headers=auth("limit"), timeout=30)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


def wait_job(url: str, job_id: str, who: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth(who), timeout=10).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def sse(url: str, path: str, who: str) -> list[dict]:
    with httpx.stream("GET", url + path, headers=auth(who), timeout=180) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_a_job_is_readable_from_any_process_only_by_its_key(pair: list[ServerProcess], testsrc_mp4: Path) -> None:
    a, b = pair
    clip = testsrc_mp4.read_bytes()
    form = {**FORM, "transcript": "an async job"}
    idem = {"Idempotency-Key": f"job-{os.getpid()}-{time.time()}"}
    r = httpx.post(a.url + "/v1/jobs", files={"video": ("c.mp4", clip)}, data=form, headers={**auth("a"), **idem})
    assert r.status_code == 202, r.text
    job = r.json()
    assert set(job) == {"id", "status_url"} and job["status_url"] == f"/v1/jobs/{job['id']}"
    # the same key and request to the other process: the same job, not a second one
    again = httpx.post(b.url + "/v1/jobs", files={"video": ("c.mp4", clip)}, data=form, headers={**auth("a"), **idem})
    assert again.status_code == 202 and again.json() == job and again.headers["idempotent-replayed"] == "true"
    clash = httpx.post(
        b.url + "/v1/jobs",
        files={"video": ("c.mp4", clip)},
        data={**form, "transcript": "other"},
        headers={**auth("a"), **idem},
    )
    assert clash.status_code == 409 and clash.json()["error"]["type"] == "idempotency_conflict"
    # events from the start, then live, read from the process that did not take the job
    events = sse(b.url, job["status_url"] + "/events", "a")
    assert events[0]["type"] == "label" and events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "segment") == events[-1]["answer"]["explanation"]
    done = wait_job(b.url, job["id"], "a")
    assert done["status"] == "done" and done["attempts"] == 1 and done["answer"] == events[-1]["answer"]
    assert sse(a.url, job["status_url"] + "/events", "a") == events  # a replay gives the same events again
    for s in pair:  # to another API key the job does not exist
        for path in (job["status_url"], job["status_url"] + "/events"):
            other = httpx.get(s.url + path, headers=auth("b"), timeout=10)
            assert other.status_code == 404 and other.json()["error"]["type"] == "not_found"
    bad = httpx.post(
        a.url + "/v1/jobs",
        files={"video": ("c.mp4", clip)},
        data={**form, "callback_url": "http://127.0.0.1:9/x"},
        headers=auth("a"),
    )
    assert bad.status_code == 422 and "webhooks are disabled" in bad.json()["error"]["message"]
    broken = httpx.post(a.url + "/v1/jobs", files={"video": ("c.mp4", b"not a video")}, data=form, headers=auth("a"))
    assert broken.status_code == 202
    failed = wait_job(a.url, broken.json()["id"], "a")
    assert failed["status"] == "failed" and failed["error"]["type"] in ("unsupported_format", "corrupt_media")


def test_a_job_started_too_often_is_marked_failed(pair: list[ServerProcess], private_redis: RedisProcess) -> None:
    """A job whose process died on its last allowed attempt (made by hand in Redis, owned by a consumer that is
    gone) is marked failed by the process that finds it, and followers see the error, instead of a third start."""
    a, b = pair
    rc = redis.Redis.from_url(private_redis.url)
    job_id = uuid.uuid4().hex
    queue, hk = f"{PREFIX}:jobs:queue", f"{PREFIX}:job:{job_id}"
    now = time.time()
    with rc.pipeline(transaction=True) as p:  # in one transaction, so no server's blocked read takes the entry
        p.hset(
            hk,
            mapping={
                "owner": key_id(KEYS["a"]),
                "status": "running",
                "attempts": 2,
                "consumer": "gone",
                "options": "{}",
                "callback_url": "",
                "created_at": now,
                "updated_at": now,
            },
        )
        p.xadd(queue, {"id": job_id})
        p.xreadgroup("workers", "gone", {queue: ">"}, count=1)
        *_, got = p.execute()
    assert got[0][1][0][1] == {b"id": job_id.encode()}
    failed = wait_job(b.url, job_id, "a", timeout=60)
    assert failed["status"] == "failed" and failed["error"]["type"] == "job_lost" and failed["attempts"] == 2
    assert sse(a.url, f"/v1/jobs/{job_id}/events", "a")[-1]["error"]["type"] == "job_lost"


def test_redis_killed_during_load(pair: list[ServerProcess], private_redis: RedisProcess, testsrc_mp4: Path) -> None:
    a, b = pair
    clip = testsrc_mp4.read_bytes()
    assert post(a.url, clip, "load", transcript="under load").status_code == 200  # cached now
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load(url: str) -> None:
        while not stop.is_set():
            r = post(url, clip, "load", transcript="under load")
            results.append((r.status_code, r.headers.get("x-xemo-cache")))
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(s.url,)) for s in pair]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        errors_before = metric(a.url, 'xemo_redis_errors_total{op="cache_get"}') + metric(
            a.url, 'xemo_redis_errors_total{op="ping"}'
        )
        private_redis.kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(1 for _, c in results if c == "bypass") < 2:
            time.sleep(0.5)
        for s in pair:  # still ready, but it says Redis is degraded
            ready = httpx.get(s.url + "/readyz")
            assert ready.status_code == 200 and ready.json()["redis"]["status"] == "degraded", ready.text
            assert metric(s.url, "xemo_redis_up") == 0
        errors_after = metric(a.url, 'xemo_redis_errors_total{op="cache_get"}') + metric(
            a.url, 'xemo_redis_errors_total{op="ping"}'
        )
        assert errors_after > errors_before
        private_redis.start()  # empty: no persistence
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            httpx.get(s.url + "/readyz").json()["redis"]["status"] == "ok" for s in pair
        ):
            time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join(240)
    statuses = [s for s, _ in results]
    # no 5xx while Redis was gone: answers, or (the key's small burst spent by cache hits) a clean 429
    assert statuses and all(s in (200, 429) for s in statuses) and 200 in statuses, statuses
    assert "bypass" in {c for _, c in results}
    # recovered by itself: the shared cache works again across the processes
    first = post(a.url, clip, "load", transcript="after the restart")
    assert first.status_code == 200 and first.headers["x-xemo-cache"] == "miss"
    again = post(b.url, clip, "load", transcript="after the restart")
    assert again.status_code == 200 and again.headers["x-xemo-cache"] == "hit"
    # and the job queue (its consumer group was lost with the data) takes jobs again
    r = httpx.post(b.url + "/v1/jobs", files={"video": ("c.mp4", clip)}, data=FORM, headers=auth("a"))
    assert r.status_code == 202, r.text
    assert wait_job(a.url, r.json()["id"], "a")["status"] == "done"


def test_a_job_whose_process_dies_is_taken_over(
    pair: list[ServerProcess], private_redis: RedisProcess, testsrc_mp4: Path
) -> None:
    clip = testsrc_mp4.read_bytes()
    rc = redis.Redis.from_url(private_redis.url)
    r = httpx.post(
        pair[0].url + "/v1/jobs",
        files={"video": ("c.mp4", clip)},
        data={**FORM, "max_tokens": "48", "transcript": "taken over"},
        headers=auth("a"),
    )
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    consumer = b""
    while time.monotonic() < deadline:
        consumer = rc.hget(f"{PREFIX}:job:{job_id}", "consumer") or b""
        if consumer:
            break
        time.sleep(0.05)
    assert consumer, "no process started the job"
    pid = int(consumer.decode().split("-")[-2])
    victim = next(s for s in pair if s.proc.pid == pid)
    survivor = next(s for s in pair if s is not victim)
    os.kill(pid, signal.SIGKILL)  # mid-job: no drain, no hand-back
    victim.proc.wait(10)
    done = wait_job(survivor.url, job_id, "a", timeout=240)
    assert done["status"] == "done" and done["attempts"] == 2
    events = sse(survivor.url, f"/v1/jobs/{job_id}/events", "a")
    restarted = [i for i, e in enumerate(events) if e["type"] == "restarted"]
    assert restarted and events[restarted[-1]] == {"type": "restarted", "attempt": 2}
    after = events[restarted[-1] + 1 :]
    assert after[0]["type"] == "label" and after[-1]["type"] == "done" and after[-1]["answer"] == done["answer"]
    assert metric(survivor.url, 'xemo_jobs_total{event="taken_over"}') >= 1
