"""xemo.client against a real server process: answers and events come back typed over JSON, SSE and WebSocket,
sync and async, from paths, bytes or a transcript alone; refusals raise ApiError; 429 is retried after
Retry-After; the `asr` option reaches the pipeline by every route; `xemo client analyze` prints the answer.

The jobs API exists only with Redis: those tests run a second server on the real Redis at 127.0.0.1:6379, under a
key prefix of their own, and are skipped when no Redis answers there."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import wire
from servers import ROOT, ServerProcess, start_server

from xemo import schemas
from xemo.client import ApiError, AsyncClient, Client, retry_wait

pytestmark = pytest.mark.slow
KEY, LIMITED = "k-client-0123", "k-client-limited"
BURST = 20
OPTS = {"max_tokens": 12, "temperature": 0}
TEXT = "Well, that went better than I expected!"
# words of the speech in testsrc_mp4 (media.SENTENCE), none of them in TEXT; not "unacceptable", which Whisper base
# heard as "acceptable" on one of these machines while passing on others
HEARD = ("believe", "again")
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory, "client", {
        "XEMO_SERVER__API_KEYS": json.dumps([KEY, LIMITED]),
        "XEMO_SERVER__RATE_LIMIT_PER_S": "1",
        "XEMO_SERVER__RATE_LIMIT_BURST": str(BURST),
    })
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def xemo(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, api_key=KEY, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server with the jobs API, on the real Redis under a fresh key prefix (its keys are removed afterwards)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("the jobs API needs Redis, and none answers at 127.0.0.1:6379 (.ci/run starts one)")
    prefix = f"xemo-test-client-{uuid.uuid4().hex[:8]}"
    srv = start_server(tmp_path_factory, "client-jobs", {
        "XEMO_REDIS_URL": REDIS_URL,
        "XEMO_REDIS__KEY_PREFIX": prefix,
        # generous: on a loaded test box a short timeout counts a busy event loop as a slow Redis
        "XEMO_REDIS__SOCKET_TIMEOUT_S": "3",
        "XEMO_REDIS__CONNECT_TIMEOUT_S": "3",
        "XEMO_SERVER__API_KEYS": json.dumps([KEY]),
        "XEMO_JOBS__CLAIM_IDLE_S": "2",  # a job left by a stopped process is taken over within seconds
        "XEMO_JOBS__CONCURRENCY": "1",
    })
    try:
        yield srv, prefix
    finally:
        srv.stop()
        r = redis.Redis.from_url(REDIS_URL)  # only this module's keys, never FLUSHDB on the shared Redis
        if keys := list(r.scan_iter(f"{prefix}:*")):
            r.delete(*keys)


def comparable(a: schemas.Answer) -> dict:
    return a.model_dump(mode="json", exclude={"id", "timings", "cached"})


@pytest.fixture(scope="module")
def answer(xemo: Client, testsrc_mp4: Path) -> schemas.Answer:
    return xemo.analyze(video=testsrc_mp4, transcript=TEXT, **OPTS)


def test_analyze_from_a_path_or_bytes_gives_a_typed_answer(xemo: Client, answer: schemas.Answer,
                                                           testsrc_mp4: Path) -> None:
    assert isinstance(answer, schemas.Answer) and answer.profile == "lite"
    assert answer.emotion.label in answer.emotion.scores and answer.cues and answer.explanation
    assert {c.id[0] for c in answer.cues} >= {"t"} and answer.timings.total_s
    again = xemo.analyze(video=testsrc_mp4.read_bytes(), transcript=TEXT, request_id="client-req-1", **OPTS)
    assert again.id == "client-req-1" and comparable(again) == comparable(answer)


def test_a_transcript_alone(xemo: Client) -> None:
    a = xemo.analyze(transcript=TEXT, labels=["happy", "sad", "neutral"], **OPTS)
    assert set(a.emotion.scores) == {"happy", "sad", "neutral"}
    assert a.cues and all(c.modality == "verbal" for c in a.cues) and a.explanation


def test_stream_yields_typed_events_ending_in_done_with_the_answer(xemo: Client, answer: schemas.Answer,
                                                                   testsrc_mp4: Path) -> None:
    events = list(xemo.stream(video=testsrc_mp4, transcript=TEXT, **OPTS))
    assert isinstance(events[0], schemas.LabelEvent) and isinstance(events[-1], schemas.DoneEvent)
    assert {type(e) for e in events[1:-1]} <= {schemas.CueEvent, schemas.TokenEvent, schemas.SegmentEvent}
    assert comparable(events[-1].answer) == comparable(answer)
    cues = [e for e in events if isinstance(e, schemas.CueEvent)]
    assert [c.id for c in cues] == [c.id for c in answer.cues]


def test_stream_ws_gives_the_same_events(xemo: Client, answer: schemas.Answer, testsrc_mp4: Path) -> None:
    events = list(xemo.stream_ws(video=testsrc_mp4, transcript=TEXT, **OPTS))
    assert isinstance(events[0], schemas.LabelEvent) and isinstance(events[-1], schemas.DoneEvent)
    assert comparable(events[-1].answer) == comparable(answer)


def test_async_client_analyze_stream_and_ws(server: ServerProcess, answer: schemas.Answer, testsrc_mp4: Path) -> None:
    async def main() -> tuple[schemas.Answer, list, list]:
        async with AsyncClient(server.url, api_key=KEY, timeout=120) as c:
            a = await c.analyze(video=testsrc_mp4, transcript=TEXT, **OPTS)
            sse = [ev async for ev in c.stream(video=testsrc_mp4, transcript=TEXT, **OPTS)]
            ws = [ev async for ev in c.stream_ws(video=testsrc_mp4, transcript=TEXT, **OPTS)]
            return a, sse, ws

    a, sse, ws = asyncio.run(main())
    assert comparable(a) == comparable(answer)
    for events in (sse, ws):
        assert events[0].type == "label" and events[-1].type == "done"
        assert comparable(events[-1].answer) == comparable(answer)


def test_refusals_raise_api_error_or_end_the_stream_with_an_error_event(xemo: Client, server: ServerProcess) -> None:
    with pytest.raises(ValueError, match="nothing to analyse"):
        xemo.analyze()  # refused before sending (the server's 422 is in test_published_schemas.py)
    with pytest.raises(ApiError) as e:
        xemo.analyze(transcript=TEXT, labels="just-one")
    assert e.value.status == 422 and e.value.type == "invalid_request" and e.value.message.startswith("labels:")
    with pytest.raises(ApiError) as e:
        list(xemo.stream(video=b"certainly not a video"))
    assert e.value.status == 415 and e.value.request_id
    with pytest.raises(ApiError) as e:
        list(xemo.stream_ws(video=b"certainly not a video"))
    assert e.value.status == 415 and e.value.type == "unsupported_format"
    events = list(xemo.stream_ws(video=b"certainly not a video", raise_on_error=False))
    assert len(events) == 1 and isinstance(events[0], schemas.ErrorEvent) and events[0].error.request_id
    with Client(server.url, api_key="wrong") as bad, pytest.raises(ApiError) as e:
        bad.models()
    assert e.value.status == 401


def _rate_limited(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('xemo_requests_total{outcome="rate_limited"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_429_is_retried_after_retry_after(server: ServerProcess) -> None:
    before = _rate_limited(server.url)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {LIMITED}"}, timeout=30) as raw:
        for _ in range(BURST + 5):  # spend the key's burst on cheap refusals (nothing to analyse: 422)
            if raw.post("/v1/analyze", files={"x": ("a", b"b")}).status_code == 429:
                break
    with Client(server.url, api_key=LIMITED, max_retries=5) as c:
        a = c.analyze(transcript=TEXT, **OPTS)
    assert a.emotion.label
    assert _rate_limited(server.url) >= before + 2  # ours above, then at least one the client waited out


def test_retry_wait_reads_seconds_and_dates_and_caps_them() -> None:
    def resp(value: str | None) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value} if value else {})

    assert retry_wait(resp("2"), 0, 30) == 2.0
    assert retry_wait(resp("120"), 0, 30) == 30.0
    assert retry_wait(resp("Wed, 21 Oct 2015 07:28:00 GMT"), 0, 30) == 0.0  # in the past
    assert retry_wait(resp(None), 2, 30) == 2.0  # backoff 0.5 * 2**attempt


def heard(a: schemas.Answer, given: str | None = TEXT) -> None:
    """The answer's transcript is what the clip's speech says (source asr), the client's text kept beside it."""
    t = a.transcript
    assert t is not None and t.source == "asr" and t.language == "en", t
    assert all(w in t.text.lower() for w in HEARD) and t.segments and t.client_text == given
    quote = next(c for c in a.cues if c.text.startswith('says: "'))
    assert "believe" in quote.text and quote.evidence["source"] == "asr" and quote.start is not None


def test_the_asr_option_reaches_the_pipeline_over_json_sse_and_websocket(xemo: Client, answer: schemas.Answer,
                                                                          server: ServerProcess,
                                                                          testsrc_mp4: Path) -> None:
    assert answer.transcript is not None and answer.transcript.source == "client"  # unasked: no ASR over TEXT
    assert answer.transcript.text == TEXT and answer.transcript.client_text is None
    heard(xemo.analyze(video=testsrc_mp4, transcript=TEXT, asr=True, **OPTS))
    for events in (list(xemo.stream(video=testsrc_mp4, transcript=TEXT, asr=True, **OPTS)),
                   list(xemo.stream_ws(video=testsrc_mp4, transcript=TEXT, asr=True, **OPTS))):
        assert isinstance(events[-1], schemas.DoneEvent)
        heard(events[-1].answer)

    async def main() -> schemas.Answer:
        async with AsyncClient(server.url, api_key=KEY, timeout=120) as c:
            return await c.analyze(video=testsrc_mp4, asr=True, **OPTS)

    heard(asyncio.run(main()), given=None)
    silent = xemo.analyze(video=testsrc_mp4, asr=False, **OPTS)  # false: not even without a transcript
    assert silent.transcript is None and "asr" not in silent.timings.model_dump()
    with pytest.raises(ApiError) as e:  # nothing to transcribe
        xemo.analyze(transcript=TEXT, asr=True, **OPTS)
    assert e.value.status == 422 and e.value.message.startswith("asr: there is no clip")


def test_without_redis_the_jobs_api_does_not_exist(xemo: Client, testsrc_mp4: Path) -> None:
    with pytest.raises(ApiError) as e:
        xemo.submit_job(video=testsrc_mp4, transcript=TEXT, **OPTS)
    assert e.value.status == 404


def test_submit_job_job_and_job_events_sync_and_async(jobs_server: tuple[ServerProcess, str],
                                                      testsrc_mp4: Path) -> None:
    srv, _ = jobs_server
    with Client(srv.url, api_key=KEY, timeout=120) as c:
        accepted = c.submit_job(video=testsrc_mp4, transcript=TEXT, asr=True, **OPTS)
        assert accepted.status_url == f"/v1/jobs/{accepted.id}"
        events = list(c.job_events(accepted.id))
        status = c.job(accepted.id)
        with pytest.raises(ApiError) as e:
            c.job("0" * 32)
        assert e.value.status == 404 and e.value.type == "not_found"
    assert isinstance(events[0], schemas.LabelEvent) and isinstance(events[-1], schemas.DoneEvent)
    assert {type(ev) for ev in events[1:-1]} <= {schemas.CueEvent, schemas.TokenEvent, schemas.SegmentEvent}
    assert status.status == "done" and status.attempts == 1 and status.answer is not None
    assert comparable(status.answer) == comparable(events[-1].answer)
    heard(status.answer)  # the job's stored options carried asr=true to the pipeline

    async def main() -> tuple[schemas.JobAccepted, list, schemas.JobStatus]:
        async with AsyncClient(srv.url, api_key=KEY, timeout=120) as c:
            acc = await c.submit_job(video=testsrc_mp4.read_bytes(), transcript=TEXT, **OPTS)
            evs = [ev async for ev in c.job_events(acc.id)]
            return acc, evs, await c.job(acc.id)

    acc, evs, st = asyncio.run(main())
    assert evs[0].type == "label" and evs[-1].type == "done" and st.status == "done" and st.answer is not None
    assert comparable(st.answer) == comparable(evs[-1].answer)
    assert st.answer.transcript is not None and st.answer.transcript.source == "client"
    # an error answer of the jobs API is the envelope its published OpenAPI documents
    pub = wire.fetch(srv.url)
    missing = httpx.get(srv.url + f"/v1/jobs/{'0' * 32}", headers={"Authorization": f"Bearer {KEY}"})
    doc = pub.openapi["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["404"]
    assert doc["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    pub.component("ErrorEnvelope", missing.json())


def test_a_taken_over_jobs_restarted_event_reaches_the_client_typed(jobs_server: tuple[ServerProcess, str],
                                                                     testsrc_mp4: Path) -> None:
    """A job whose process stopped mid-run, as it leaves Redis (running, attempt 1, its queue entry pending for a
    consumer that is gone): the server takes it over, and the client reads `restarted` before the new run."""
    import redis
    from redis.exceptions import ResponseError

    from server.auth import key_id

    srv, prefix = jobs_server
    rc = redis.Redis.from_url(REDIS_URL)
    job_id, queue, now = uuid.uuid4().hex, f"{prefix}:jobs:queue", time.time()
    try:
        rc.xgroup_create(queue, "workers", id="0", mkstream=True)
    except ResponseError as e:  # the server made it already
        assert "BUSYGROUP" in str(e)
    options = schemas.AnalyzeOptions(transcript=TEXT, **OPTS).model_dump(mode="json", exclude={"stream"})
    with rc.pipeline(transaction=True) as p:  # in one transaction, so the server's blocked read cannot take it
        p.hset(f"{prefix}:job:{job_id}", mapping={
            "owner": key_id(KEY), "status": "running", "attempts": 1, "consumer": "gone",
            "options": json.dumps(options), "callback_url": "", "created_at": now, "updated_at": now})
        p.set(f"{prefix}:job:{job_id}:video", testsrc_mp4.read_bytes(), px=600_000)
        p.zadd(f"{prefix}:jobs:active", {job_id: now})
        p.xadd(queue, {"id": job_id})
        p.xreadgroup("workers", "gone", {queue: ">"}, count=1)
        *_, got = p.execute()
    assert got[0][1][0][1] == {b"id": job_id.encode()}
    with Client(srv.url, api_key=KEY, timeout=120) as c:
        events = list(c.job_events(job_id))
        status = c.job(job_id)
    assert isinstance(events[0], schemas.RestartedEvent) and events[0].attempt == 2, events[:2]
    assert isinstance(events[1], schemas.LabelEvent) and isinstance(events[-1], schemas.DoneEvent)
    assert status.status == "done" and status.attempts == 2
    assert status.answer is not None and comparable(status.answer) == comparable(events[-1].answer)


def test_xemo_client_analyze_command(server: ServerProcess, testsrc_mp4: Path) -> None:
    cmd = [sys.executable, "-m", "xemo.cli", "client", "analyze", server.url, str(testsrc_mp4),
           "--transcript", TEXT, "--api-key", KEY]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    schemas.Answer.model_validate(json.loads(r.stdout))
    r = subprocess.run([*cmd, "--stream"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0 and lines[0]["type"] == "label" and lines[-1]["type"] == "done"
    r = subprocess.run([*cmd[:-2], "--api-key", "wrong"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "unauthorized" in r.stderr
