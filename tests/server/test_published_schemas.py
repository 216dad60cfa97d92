"""Every answer of every endpoint of a real server, and every event of both streams, checked against the schemas
that server publishes (`/openapi.json` for HTTP, `/v1/schemas/events/*.json` for SSE and WebSocket events).

`conforms()` looks up the documented response of an operation for the status code and content type that came
back, and validates the body against it: an undocumented status or content type fails too. Text-only requests
and the WebSocket options frame with or without `"type": "options"` are exercised here as well.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import wire
from servers import ServerProcess, start_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.slow
KEY = "k-schema-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
FORM = {"max_tokens": "12", "temperature": "0"}
TEXT = "I cannot believe you did this again, this is unacceptable."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory, "schemas", {"XEMO_SERVER__API_KEYS": json.dumps([KEY])})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def published(server: ServerProcess) -> wire.Published:
    return wire.fetch(server.url)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as c:
        yield c


def fields(data: dict[str, str]) -> dict[str, tuple[None, str]]:
    """Text fields as multipart parts (httpx sends `data=` alone url-encoded)."""
    return {k: (None, v) for k, v in data.items()}


def conforms(pub: wire.Published, method: str, path: str, r: httpx.Response) -> Any:
    """Validate `r` against the response documented for (method, path); return the parsed body."""
    responses = pub.openapi["paths"][path][method.lower()]["responses"]
    doc = responses.get(str(r.status_code)) or responses.get(f"{str(r.status_code)[0]}XX")
    assert doc is not None, f"{method} {path}: status {r.status_code} is not documented"
    ctype = r.headers["content-type"].split(";")[0].strip()
    content = doc.get("content", {})
    assert ctype in content, f"{method} {path} {r.status_code}: {ctype} is not documented ({list(content)})"
    schema = content[ctype].get("schema")
    if ctype != "application/json":
        return r.text
    body = r.json()
    if schema is not None:
        jsonschema_rs.Draft202012Validator({**schema, "components": pub.openapi["components"]}).validate(body)
    return body


def test_openapi_publishes_every_wire_model_with_examples(published: wire.Published) -> None:
    comps = published.openapi["components"]["schemas"]
    for name in ("AnalyzeOptions", "Answer", "Cue", "Segment", "Transcript", "Timings", "Usage", "ErrorEnvelope",
                 "LabelEvent", "CueEvent", "TokenEvent", "SegmentEvent", "DoneEvent", "ErrorEvent", "WsOptionsFrame"):
        assert name in comps, name
    assert comps["Answer"]["examples"] and comps["ErrorEnvelope"]["examples"]
    op = published.openapi["paths"]["/v1/analyze"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Answer"}
    form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"required": ["transcript"]} in form["anyOf"]
    assert set(published.events) == {"label", "cue", "token", "segment", "done", "error", "restarted"}
    assert published.events["restarted"]["required"] == ["type", "attempt"]


def test_every_error_response_documented_has_the_error_envelope_jobs_api_included() -> None:
    """The OpenAPI of a server with `redis_url` set (the jobs routes exist only then; building the document
    connects to nothing): each documented 4xx/5xx answer is the error envelope, except /readyz's 503, which is the
    readiness report."""
    from server.app import create_app
    from xemo.settings import load_settings

    doc = create_app(load_settings(redis_url="redis://127.0.0.1:6379/0")).openapi()
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    errors = {(path, method, code): r.get("content") for path, ops in doc["paths"].items()
              for method, op in ops.items() for code, r in op["responses"].items()
              if code[0] in "45" and (path, code) != ("/readyz", "503")}
    jobs = {(path, code) for path, _, code in errors if path.startswith("/v1/jobs")}
    assert jobs == {(p, c) for p in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events")
                    for c in ("4XX", "503")} | {("/v1/jobs/{job_id}", "404"), ("/v1/jobs/{job_id}/events", "404")}
    wrong = {k: v for k, v in errors.items() if v != envelope}
    assert not wrong, wrong
    # the job's events are SSE only (no JSON body on 200)
    ok = doc["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(ok) == ["text/event-stream"]


def test_probes_models_docs_and_errors_conform(server: ServerProcess, published: wire.Published,
                                               client: httpx.Client) -> None:
    anon = httpx.Client(base_url=server.url, timeout=30)
    assert conforms(published, "GET", "/livez", anon.get("/livez")) == {"status": "alive"}
    assert conforms(published, "GET", "/readyz", anon.get("/readyz"))["status"] == "ready"
    assert "xemo_requests_total" in conforms(published, "GET", "/metrics", anon.get("/metrics"))
    assert conforms(published, "GET", "/v1/models", client.get("/v1/models"))["data"][0]["profile"] == "lite"
    assert conforms(published, "GET", "/v1/models", anon.get("/v1/models"))["error"]["type"] == "unauthorized"
    index = conforms(published, "GET", "/v1/schemas/events", anon.get("/v1/schemas/events"))
    for url in index["events"].values():
        assert conforms(published, "GET", "/v1/schemas/events/{kind}.json", anon.get(url))["$schema"]
    missing = anon.get("/v1/schemas/events/nope.json")
    assert missing.status_code == 404
    conforms(published, "GET", "/v1/schemas/events/{kind}.json", missing)
    doc = conforms(published, "GET", "/v1/asyncapi.json", anon.get("/v1/asyncapi.json"))
    assert doc["asyncapi"].startswith("3.") and set(doc["channels"]) == {"analyzeEvents", "stream", "jobEvents"}
    assert "restarted" in doc["channels"]["jobEvents"]["messages"]
    assert "restarted" not in doc["channels"]["analyzeEvents"]["messages"]  # an analysis never restarts
    # the AsyncAPI payloads are the same schemas as the OpenAPI components
    assert doc["components"]["schemas"]["DoneEvent"] == published.openapi["components"]["schemas"]["DoneEvent"]


def test_analyze_answers_and_errors_conform(published: wire.Published, client: httpx.Client,
                                            testsrc_mp4: Path, speech_wav: Path) -> None:
    clip = testsrc_mp4.read_bytes()
    cases = {
        "video": client.post("/v1/analyze", files={"video": ("c.mp4", clip)}, data=FORM),
        "audio": client.post("/v1/analyze", files={"audio": ("s.wav", speech_wav.read_bytes())}, data=FORM),
        "junk": client.post("/v1/analyze", files={"video": ("c.mp4", b"not a video at all")}),
        "bad_option": client.post("/v1/analyze", files={"video": ("c.mp4", clip)}, data={"max_tokens": "lots"}),
        "not_multipart": client.post("/v1/analyze", json={"transcript": TEXT}),
        "empty": client.post("/v1/analyze", files={"x": ("a", b"b")}),
    }
    bodies = {k: conforms(published, "POST", "/v1/analyze", r) for k, r in cases.items()}
    assert {k: r.status_code for k, r in cases.items()} == {
        "video": 200, "audio": 200, "junk": 415, "bad_option": 422, "not_multipart": 415, "empty": 422}
    assert bodies["video"]["cues"] and all(c["id"] for c in bodies["video"]["cues"])
    assert bodies["bad_option"]["error"]["message"].startswith("max_tokens:")
    # an empty request names every way to fill it
    msg = bodies["empty"]["error"]["message"]
    assert all(f"'{f}'" in msg for f in ("video", "audio", "transcript")), msg


def test_a_transcript_alone_gives_a_label_verbal_cues_and_an_explanation(published: wire.Published,
                                                                          client: httpx.Client) -> None:
    r = client.post("/v1/analyze", files=fields({**FORM, "transcript": TEXT}))
    a = conforms(published, "POST", "/v1/analyze", r)
    assert r.status_code == 200, r.text
    assert a["emotion"]["label"] in a["emotion"]["scores"]
    assert a["cues"] and {c["modality"] for c in a["cues"]} == {"verbal"}
    assert [c["id"] for c in a["cues"]] == [f"t{i + 1}" for i in range(len(a["cues"]))]
    assert a["explanation"].strip()
    assert "ingest" not in a["timings"]


def sse(client: httpx.Client, **form: Any) -> list[dict]:
    with client.stream("POST", "/v1/analyze", headers={"Accept": "text/event-stream"}, **form) as r:
        assert r.status_code == 200
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_every_sse_event_conforms(published: wire.Published, client: httpx.Client, testsrc_mp4: Path) -> None:
    for form in ({"files": {"video": ("c.mp4", testsrc_mp4.read_bytes())}, "data": {**FORM, "transcript": TEXT}},
                 {"files": fields({**FORM, "transcript": TEXT})}):
        events = sse(client, **form)
        assert events[0]["type"] == "label" and events[-1]["type"] == "done"
        for ev in events:
            published.event(ev)


def ws_exchange(server: ServerProcess, first: dict | str, clip: bytes | None) -> tuple[list[dict], int]:
    with connect(server.url.replace("http", "ws") + "/v1/stream", additional_headers=AUTH) as ws:
        # A server that rejects the first frame may close before the rest is sent: what it sent is still read below.
        with contextlib.suppress(ConnectionClosed):
            ws.send(first if isinstance(first, str) else json.dumps(first))
            if clip is not None:
                ws.send(clip)
            ws.send(json.dumps({"type": "end"}))
        frames: list[dict] = []
        try:
            while True:
                frames.append(json.loads(ws.recv(timeout=120)))
        except ConnectionClosed as e:
            return frames, e.rcvd.code if e.rcvd else 0


@pytest.mark.parametrize("typed", [{"type": "options"}, {}, {"type": "start"}], ids=["options", "untyped", "start"])
def test_websocket_options_frame_with_or_without_type_and_every_frame_conforms(
    server: ServerProcess, published: wire.Published, testsrc_mp4: Path, typed: dict
) -> None:
    clip = testsrc_mp4.read_bytes() if typed.get("type") != "start" else None  # "start": text only
    frames, code = ws_exchange(server, {**typed, **FORM, "transcript": TEXT}, clip)
    assert code == 1000 and frames[0]["type"] == "label" and frames[-1]["type"] == "done"
    for f in frames:
        published.event(f)


def test_websocket_error_frames_conform(server: ServerProcess, published: wire.Published) -> None:
    for first, clip, code in (({"type": "end"}, None, 4400), ({"type": "options"}, None, 4422),
                              ({"type": "options"}, b"junk bytes", 4415)):
        frames, got = ws_exchange(server, first, clip)
        assert got == code and [f["type"] for f in frames] == ["error"], (first, frames, got)
        published.event(frames[0])
