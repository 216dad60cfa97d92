"""xemo.client against a real server process: answers and events come back typed over JSON, SSE and WebSocket,
sync and async, from paths, bytes or a transcript alone; refusals raise ApiError; 429 is retried after
Retry-After; `xemo client analyze` prints the answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import ROOT, ServerProcess, start_server

from xemo import schemas
from xemo.client import ApiError, AsyncClient, Client, retry_wait

pytestmark = pytest.mark.slow
KEY, LIMITED = "k-client-0123", "k-client-limited"
BURST = 20
OPTS = {"max_tokens": 12, "temperature": 0}
TEXT = "Well, that went better than I expected!"


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


def test_submit_job_and_job_when_the_jobs_api_exists(xemo: Client, server: ServerProcess) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    if "/v1/jobs" not in paths:
        pytest.skip("this server has no jobs API")
    accepted = xemo.submit_job(transcript=TEXT, **OPTS)
    events = list(xemo.job_events(accepted.id))
    assert isinstance(events[-1], schemas.DoneEvent)
    status = xemo.job(accepted.id)
    assert status.status == "done" and status.answer is not None and status.answer.emotion.label


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
