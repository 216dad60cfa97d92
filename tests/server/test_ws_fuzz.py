"""WebSocket protocol fuzzing (Schemathesis covers only the OpenAPI side): random sequences of option frames,
control frames, garbage text and binary chunks (pieces of a real clip among them) against a real server. Whatever
arrives, every frame the server sends is one of the protocol's JSON frames, the socket closes with 1000 right
after `done` or with a 4xxx code right after an `error` frame (never 4500, a server fault), and the server stays
healthy with its slot free."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServerProcess, start_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.slow
KINDS = {"label", "cue", "token", "segment", "done", "error"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory, "wsfuzz", {"XEMO_SERVER__REQUEST_TIMEOUT_S": "30"})
    yield srv
    srv.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
options = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["start", "end", "bogus"]),
        "transcript": st.text(max_size=200) | json_values,
        "labels": st.sampled_from(["happy,sad", "a", ",,,", "x" * 100]) | json_values,
        "max_tokens": st.integers(-5, 3000) | json_values,
        "temperature": st.floats(-1, 3, allow_nan=False) | json_values,
        "stream": json_values,
        "api_key": json_values,
    },
)

valid_options = st.fixed_dictionaries(
    {"type": st.just("start")},
    optional={
        "transcript": st.text(max_size=100) | st.sampled_from(["I cannot believe you did this again.", "We won!"]),
        "max_tokens": st.integers(1, 24),
        "temperature": st.floats(0, 1.5, allow_nan=False),
        "labels": st.just("calm,tense,happy"),
    },
)


def frames(clip: bytes) -> st.SearchStrategy[list[str | bytes]]:
    control = st.sampled_from(["end", "audio", "video", "cancel", "start", "dance"]).map(
        lambda t: json.dumps({"type": t})
    )
    garbage = st.text(max_size=50) | json_values.map(json.dumps)
    chunk = st.binary(max_size=2048) | st.integers(0, len(clip) - 1).map(lambda i: clip[i : i + 4096])
    whole = st.just(clip)
    first = st.one_of(valid_options, valid_options, options, garbage, st.binary(max_size=64)).map(
        lambda f: f if isinstance(f, bytes | str) else json.dumps(f)
    )
    upload = st.sampled_from(
        [[clip, '{"type": "end"}'], ['{"type": "audio"}', clip, '{"type": "end"}'], [clip[: len(clip) // 2]]]
    )
    rest = upload | st.lists(st.one_of(control, garbage, chunk, whole), max_size=6)
    return st.tuples(first, rest).map(lambda fr: [fr[0], *fr[1]])


def exchange(url: str, sent: list[str | bytes]) -> tuple[list[dict], int]:
    """Send the frames (stopping if the server closes), then read until it closes: (frames received, close code)."""
    received: list[dict] = []
    with connect(url, open_timeout=30, close_timeout=5) as ws:
        try:
            for f in sent:
                ws.send(f)
            if not any(isinstance(f, str) and '"end"' in f for f in sent):
                ws.send(json.dumps({"type": "end"}))  # finish the exchange so the test never waits on the budget
        except ConnectionClosed:
            pass
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed as e:
            assert e.rcvd is not None, "the server dropped the connection without a close frame"
            return received, e.rcvd.code
    raise AssertionError("unreachable")


def test_any_frame_sequence_gets_a_protocol_answer(server: ServerProcess, testsrc_mp4: Path) -> None:
    url = server.url.replace("http", "ws") + "/v1/stream"

    @given(sent=frames(testsrc_mp4.read_bytes()))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def check(sent: list[str | bytes]) -> None:
        received, code = exchange(url, sent)
        assert all(f.get("type") in KINDS for f in received), received
        if code == 1000:
            assert received and received[-1]["type"] == "done" and received[0]["type"] == "label"
        else:
            assert 4400 <= code < 4500, (code, received)  # a client error, never a 4500 server fault
            if received:  # an error frame precedes the close unless the failure came mid-stream
                last = received[-1]
                assert last["type"] == "error" and last["error"]["type"] and last["error"]["request_id"]

    check()
    assert httpx.get(server.url + "/livez").status_code == 200
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["running"] == 0
