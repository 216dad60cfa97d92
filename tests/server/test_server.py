"""The real server process end to end: JSON, SSE and WebSocket flows on a generated clip, every error path a
client can reach, admission, cancellation, metrics and the SIGTERM drain.

One server process serves the whole module (loading the models costs seconds). It runs with one running slot
and no waiting room, so "the queue is full" is simply "one request is running"; every test leaves the slot free.
The SIGTERM test stops that server, so it is the last test of the module.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import media
import pytest
from servers import ServerProcess, read_reply, start_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

KEY, LIMITED_KEY = "k-main-0123", "k-limited-4567"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BYTES = 2_000_000
FORM = {"max_tokens": "12", "temperature": "0", "transcript": "I cannot believe you did this again."}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory,
        "main",
        {
            "XEMO_SERVER__API_KEYS": json.dumps([KEY, LIMITED_KEY]),
            "XEMO_SERVER__RATE_LIMIT_PER_S": "0.2",
            "XEMO_SERVER__RATE_LIMIT_BURST": "40",
            "XEMO_SERVER__MAX_RUNNING": "1",
            "XEMO_SERVER__MAX_QUEUE": "0",
            "XEMO_SERVER__RETRY_AFTER_S": "2",
            "XEMO_SERVER__DRAIN_TIMEOUT_S": "60",
            "XEMO_INGEST__MAX_BYTES": str(MAX_BYTES),
        },
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def clip(testsrc_mp4: Path) -> bytes:
    return testsrc_mp4.read_bytes()


def metrics(c: httpx.Client) -> dict[str, float]:
    out = {}
    for line in c.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_idle(c: httpx.Client, timeout: float = 30) -> float:
    """Seconds until no request holds a slot."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        m = metrics(c)
        if m["xemo_requests_running"] == 0 and m["xemo_requests_waiting"] == 0:
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise AssertionError("the server never became idle")


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event or "message", json.loads(line[6:])


def comparable(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("id", "timings")}


# -- probes, docs, envelope --------------------------------------------------------------------------------------
def test_probes_docs_models_and_request_ids(server: ServerProcess, client: httpx.Client) -> None:
    anon = httpx.Client(base_url=server.url, timeout=30)
    assert anon.get("/livez").status_code == 200
    r = anon.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["models_loaded"] and r.json()["checks"]["runtime_on_device"]
    assert r.json()["runtime"] == {"ready": True, "reason": None, "device": "cpu"}
    assert "xemo_requests_running" in anon.get("/metrics").text  # probes need no key
    assert anon.get("/docs").status_code == 200
    schema = anon.get("/openapi.json").json()
    assert "multipart/form-data" in schema["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]
    r = anon.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
    m = client.get("/v1/models", headers={"X-Request-Id": "my-id-42"})
    assert m.headers["x-request-id"] == "my-id-42"
    assert m.json()["data"][0]["profile"] == "lite" and "visual" in m.json()["data"][0]["stages"]
    nf = anon.get("/nope")
    rid = nf.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert nf.status_code == 404 and nf.json() == {
        "error": {"type": "not_found", "message": "Not Found", "request_id": rid}
    }
    bad = anon.get("/livez", headers={"X-Request-Id": "evil id <script> with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])  # unsafe ids are replaced


# -- the three transports ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def json_run(client: httpx.Client, clip: bytes) -> dict:
    """One JSON analysis on an idle server, with a metrics scrape just before and just after it."""
    wait_idle(client)
    before = metrics(client)
    r = client.post("/v1/analyze", files={"video": ("clip.mp4", clip, "video/mp4")}, data=FORM)
    assert r.status_code == 200, r.text
    return {"answer": r.json(), "before": before, "after": metrics(client)}


@pytest.fixture(scope="module")
def json_answer(json_run: dict) -> dict:
    return json_run["answer"]


def test_json_answer(json_answer: dict) -> None:
    a = json_answer
    assert a["profile"] == "lite" and a["emotion"]["label"] in a["emotion"]["scores"]
    assert a["explanation"] and a["cues"] and a["timings"]["total_s"] > 0
    assert any(c["modality"] == "verbal" for c in a["cues"])


def test_sse_label_first_done_last_and_equal_to_json(client: httpx.Client, clip: bytes, json_answer: dict) -> None:
    with client.stream(
        "POST", "/v1/analyze", files={"video": ("clip.mp4", clip)}, data=FORM, headers={"Accept": "text/event-stream"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no" and "content-length" not in r.headers
        events = list(sse_events(r.iter_lines()))
    kinds = [k for k, _ in events]
    assert kinds[0] == "label" and kinds[-1] == "done" and kinds.count("done") == 1
    assert "error" not in kinds and "token" in kinds
    assert kinds.index("label") < kinds.index("token")
    done = events[-1][1]["answer"]
    assert comparable(done) == comparable(json_answer)
    assert events[0][1]["label"] == done["emotion"]["label"]
    assert [e for k, e in events if k == "cue"] == [{"type": "cue", **c} for c in done["cues"]]
    # the segments are the explanation; the tokens are the model's part of it, as generated
    assert "".join(e["text"] for k, e in events if k == "segment") == done["explanation"]
    tokens = "".join(e["text"] for k, e in events if k == "token")
    model = "".join(e["text"] for k, e in events if k == "segment" and e["kind"] in ("observation", "interpretation"))
    assert tokens.strip() and tokens.strip().startswith(model.strip())  # a sentence cut by max_tokens is dropped


def test_websocket_flow_matches_sse(server: ServerProcess, clip: bytes, json_answer: dict) -> None:
    with connect(server.url.replace("http", "ws") + "/v1/stream", additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "start", **{k: v for k, v in FORM.items()}}))
        for i in range(0, len(clip), 32_000):
            ws.send(clip[i : i + 32_000])
        ws.send(json.dumps({"type": "end"}))
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(ws.recv(timeout=120)))
        assert closed.value.rcvd.code == 1000
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "label" and kinds[-1] == "done" and "token" in kinds
    assert comparable(frames[-1]["answer"]) == comparable(json_answer)


@pytest.mark.parametrize(
    "first, code, etype",
    [
        (b"\x00binary-first", 4400, "protocol_error"),
        ('["not", "an", "object"]', 4400, "protocol_error"),
        ('{"type": "start", "max_tokens": "many"}', 4422, "invalid_request"),
    ],
)
def test_websocket_protocol_misuse_gets_error_frame_and_4000_close(
    server: ServerProcess, first: object, code: int, etype: str
) -> None:
    with connect(server.url.replace("http", "ws") + "/v1/stream", additional_headers=AUTH) as ws:
        ws.send(first)
        frame = json.loads(ws.recv(timeout=30))
        assert frame["type"] == "error" and frame["error"]["type"] == etype and frame["error"]["request_id"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == code


def test_websocket_unexpected_frame_and_missing_key(server: ServerProcess) -> None:
    url = server.url.replace("http", "ws") + "/v1/stream"
    with connect(url, additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "start"}))
        ws.send(json.dumps({"type": "dance"}))
        assert json.loads(ws.recv(timeout=30))["error"]["type"] == "protocol_error"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 4400
    with connect(url) as ws:
        ws.send(json.dumps({"type": "start"}))
        assert json.loads(ws.recv(timeout=30))["error"]["type"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 4401


# -- what clients can get wrong ----------------------------------------------------------------------------------
def test_413_is_sent_before_the_whole_body_is(server: ServerProcess) -> None:
    planned = 40 * MAX_BYTES
    s = socket.create_connection(("127.0.0.1", server.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.sendall(
        b"POST /v1/analyze HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=BB\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    head = b'--BB\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n\r\n'
    s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
    chunk = b"\0" * 65536
    sent = 0
    try:
        while sent < planned:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection after answering
    reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"type":"too_large"' in reply.replace(b" ", b"")
    assert sent < planned / 4  # refused while streaming, long before the end of the body
    print(f"413 after {sent} of {planned} body bytes (limit {MAX_BYTES})")


def test_413_on_declared_length_without_reading_the_body(server: ServerProcess) -> None:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(
        b"POST /v1/analyze HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=BB\r\nContent-Length: 999999999\r\n\r\n"
    )
    reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413") and b"retry-after" not in reply.lower()


@pytest.fixture(scope="module")
def hostile(media_dir: Path, testsrc_mp4: Path) -> dict[str, bytes]:
    base = testsrc_mp4.read_bytes()
    wide = media_dir / "srv_wide.avi"
    media.ffmpeg("-f", "lavfi", "-i", "color=c=black:s=5000x300:r=25", "-frames:v", "1", "-c:v", "mjpeg", str(wide))
    return {
        "text_as_mp4": b"These are my meeting notes, not a video. " * 20,
        "hls_playlist": b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        "truncated": base[: len(base) // 2],
        "huge_dimensions": wide.read_bytes(),
        "empty": b"",
    }


@pytest.mark.parametrize(
    "name, status",
    [("text_as_mp4", 415), ("hls_playlist", 415), ("empty", 415), ("truncated", 422), ("huge_dimensions", 422)],
)
def test_hostile_files_get_typed_4xx(client: httpx.Client, hostile: dict[str, bytes], name: str, status: int) -> None:
    r = client.post("/v1/analyze", files={"video": ("clip.mp4", hostile[name], "video/mp4")})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in err["message"] and "/tmp" not in err["message"]
    assert not re.search(r"0x[0-9a-fA-F]{6,}", err["message"])  # no memory addresses


def test_bad_requests_are_4xx_never_500(client: httpx.Client, clip: bytes) -> None:
    cases = [
        client.post("/v1/analyze", json={"video": "x"}),  # not multipart
        client.post("/v1/analyze", data={"transcript": "  "}, files={"x": ("a", b"b")}),  # nothing to analyse
        client.post("/v1/analyze", files={"video": ("c.mp4", clip)}, data={"max_tokens": "-3"}),
        client.post("/v1/analyze", files={"video": ("c.mp4", clip)}, data={"temperature": "hot"}),
        client.post("/v1/analyze", files={"video": ("c.mp4", clip)}, data={"labels": "onlyone"}),
        client.post("/v1/analyze", content=b"--BB\r\ngarbage", headers={"Content-Type": "multipart/form-data"}),
        client.get("/v1/analyze"),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert set(r.json()["error"]) == {"type", "message", "request_id"}


def test_401_without_or_with_a_wrong_key(server: ServerProcess, clip: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        r = anon.post("/v1/analyze", files={"video": ("c.mp4", clip)})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        r = anon.post("/v1/analyze", files={"video": ("c.mp4", clip)}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401


def test_429_past_the_rate_with_retry_after(server: ServerProcess, client: httpx.Client) -> None:
    before = metrics(client)['xemo_requests_total{outcome="rate_limited"}']
    statuses = []
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {LIMITED_KEY}"}) as c:
        for _ in range(45):  # burst 40: cheap requests (no clip) spend the tokens
            r = c.post("/v1/analyze", files={"x": ("a", b"b")})  # nothing to analyse: 422 after the key is checked
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["type"] == "rate_limited"
                break
    assert statuses[-1] == 429 and len(statuses) > 30 and set(statuses[:-1]) == {422}
    assert metrics(client)['xemo_requests_total{outcome="rate_limited"}'] == before + 1
    # other keys have their own bucket
    assert client.get("/v1/models").status_code == 200


# -- admission, cancellation, metrics ----------------------------------------------------------------------------
def test_full_queue_503_then_disconnect_frees_the_slot(
    server: ServerProcess, client: httpx.Client, clip: bytes
) -> None:
    wait_idle(client)
    before = metrics(client)
    form = {**FORM, "max_tokens": "200", "stream": "true"}
    with client.stream("POST", "/v1/analyze", files={"video": ("clip.mp4", clip)}, data=form) as r:
        events = sse_events(r.iter_lines())
        assert next(events)[0] == "label"
        # the only running slot is taken and there is no waiting room: refused at once
        t0 = time.perf_counter()
        busy = client.post("/v1/analyze", files={"video": ("clip.mp4", clip)}, data=FORM)
        assert busy.status_code == 503 and busy.json()["error"]["type"] == "overloaded"
        assert busy.headers["retry-after"] == "2"
        assert time.perf_counter() - t0 < 5  # not queued behind the running request
        assert httpx.get(server.url + "/readyz").status_code == 503  # saturated
        assert metrics(client)["xemo_requests_running"] == 1
        t_close = time.perf_counter()
    freed_after = wait_idle(client, timeout=10)  # closing the stream above disconnected the client
    print(f"slot freed {1000 * (time.perf_counter() - t_close):.0f} ms after disconnect (poll {freed_after:.3f} s)")
    after = metrics(client)
    assert after['xemo_requests_total{outcome="cancelled"}'] == before['xemo_requests_total{outcome="cancelled"}'] + 1
    assert after['xemo_requests_total{outcome="rejected_overload"}'] == (
        before['xemo_requests_total{outcome="rejected_overload"}'] + 1
    )
    assert httpx.get(server.url + "/readyz").status_code == 200  # not saturated any more: the slot is free


def test_a_503_reaches_a_client_still_sending_its_upload(
    server: ServerProcess, client: httpx.Client, clip: bytes
) -> None:
    """Refused at admission before its body is read, a request's upload is read and dropped before the answer, so
    the client gets the 503 and its Retry-After. Closing the socket with the upload unread in it would make the
    kernel reset the connection, and the client would see the reset instead."""
    wait_idle(client)
    big = b"\0" * (MAX_BYTES - 200_000)  # within the limit: only admission refuses it

    async def refused() -> list[int | str]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as c:
            out: list[int | str] = []
            for _ in range(4):
                try:
                    out.append((await c.post("/v1/analyze", files={"video": ("big.mp4", big)}, data=FORM)).status_code)
                except httpx.TransportError as e:
                    out.append(type(e).__name__)
            return out

    form = {**FORM, "max_tokens": "200", "stream": "true"}
    with client.stream("POST", "/v1/analyze", files={"video": ("clip.mp4", clip)}, data=form) as r:
        events = sse_events(r.iter_lines())  # held: a dropped iterator would close the stream and free the slot
        assert next(events)[0] == "label"
        codes = asyncio.run(refused())
    assert codes == [503] * 4, codes
    wait_idle(client, timeout=10)


def test_websocket_close_mid_stream_frees_the_slot(server: ServerProcess, client: httpx.Client, clip: bytes) -> None:
    wait_idle(client)
    before = metrics(client)['xemo_requests_total{outcome="cancelled"}']
    with connect(server.url.replace("http", "ws") + "/v1/stream", additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "start", "max_tokens": 200}))
        ws.send(clip)
        ws.send(json.dumps({"type": "end"}))
        assert json.loads(ws.recv(timeout=120))["type"] == "label"
    # leaving the block closed the socket mid-stream
    wait_idle(client, timeout=10)
    assert metrics(client)['xemo_requests_total{outcome="cancelled"}'] == before + 1


def test_json_client_that_gives_up_is_cancelled(client: httpx.Client, clip: bytes) -> None:
    wait_idle(client)
    before = metrics(client)['xemo_requests_total{outcome="cancelled"}']
    with pytest.raises(httpx.ReadTimeout):  # the client stops waiting and closes its connection
        client.post(
            "/v1/analyze",
            files={"video": ("clip.mp4", clip)},
            data={**FORM, "max_tokens": "200"},
            timeout=httpx.Timeout(30, read=0.1),  # the answer takes ~1 s: give up well before it
        )
    wait_idle(client, timeout=10)
    assert metrics(client)['xemo_requests_total{outcome="cancelled"}'] == before + 1


def test_metrics_move_as_expected(json_run: dict) -> None:
    before, after, answer = json_run["before"], json_run["after"], json_run["answer"]

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('xemo_requests_total{outcome="ok"}') == 1
    for h in ("time_to_label", "time_to_first_token", "e2e_request_latency", "request_queue_time"):
        assert delta(f"xemo_{h}_seconds_count") == 1, h
    assert delta("xemo_inter_token_latency_seconds_count") >= 1
    assert delta('xemo_batch_size_count{stage="visual"}') == 1
    assert delta('xemo_batch_size_count{stage="audio"}') == 1
    assert delta('xemo_batch_size_count{stage="decode"}') >= 1  # continuous batching steps of the LLM
    assert "xemo_llm_running" in after and "xemo_llm_waiting" in after
    for stage in ("upload", "ingest", "demux", "video_decode", "audio_decode", "visual", "audio", "decode"):
        assert delta(f'xemo_stage_duration_seconds_count{{stage="{stage}"}}') == 1, stage
    assert delta("xemo_generated_tokens_total") == answer["usage"]["generated_tokens"] > 0
    assert delta("xemo_prompt_tokens_total") > 0
    e2e = after["xemo_e2e_request_latency_seconds_sum"] - before["xemo_e2e_request_latency_seconds_sum"]
    assert e2e >= answer["timings"]["total_s"] * 0.99  # measured from HTTP receipt, so never shorter
    assert after['xemo_e2e_request_latency_seconds_bucket{le="600.0"}'] >= 1  # buckets reach past a minute
    assert after["xemo_requests_running"] == 0


# -- last: SIGTERM stops this server -----------------------------------------------------------------------------
def test_sigterm_drains_a_stream_in_flight_then_exits_0(
    server: ServerProcess, client: httpx.Client, clip: bytes
) -> None:
    wait_idle(client)
    form = {**FORM, "max_tokens": "40", "stream": "true"}
    with client.stream("POST", "/v1/analyze", files={"video": ("clip.mp4", clip)}, data=form) as r:
        lines = r.iter_lines()
        events = sse_events(lines)
        assert next(events)[0] == "label"
        server.proc.send_signal(signal.SIGTERM)
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as fresh:
            # poll rather than sleep: the stream in flight (~0.5 s of decoding left) must still be running below
            t0 = time.perf_counter()
            while (ready := fresh.get("/readyz")).status_code == 200 and time.perf_counter() - t0 < 5:
                time.sleep(0.005)
            assert ready.status_code == 503 and ready.json()["checks"]["not_draining"] is False
            refused = fresh.post("/v1/analyze", files={"video": ("clip.mp4", clip)}, data=FORM)
            assert refused.status_code == 503 and refused.json()["error"]["type"] == "draining"
            assert "retry-after" in refused.headers
        rest = [k for k, _ in events]
    assert rest[-1] == "done" and "error" not in rest  # the stream in flight finished
    assert server.proc.wait(60) == 0
