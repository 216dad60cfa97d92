"""The result cache: an identical greedy request is answered from the first answer (JSON, SSE and WebSocket alike)
without decoding or running a model; anything that changes the input or asks for sampling does the work."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import ServerProcess, start_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.result_cache import MemoryResultCache, cache_key

FORM = {"max_tokens": "16", "temperature": "0", "transcript": "We actually won the final!"}
KEYS = {"a": "cache-key-a", "b": "cache-key-b"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XEMO_SERVER__RESULT_CACHE_ENTRIES": "8", "XEMO_SERVER__API_KEYS": json.dumps(list(KEYS.values()))}
    srv = start_server(tmp_path_factory, "cache", env)
    yield srv
    srv.stop()


def metrics(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


HIT, MISS = 'xemo_result_cache_lookups_total{result="hit"}', 'xemo_result_cache_lookups_total{result="miss"}'
INGESTS = 'xemo_stage_duration_seconds_count{stage="ingest"}'


def same(a: dict, b: dict) -> bool:
    drop = ("id", "timings", "cached")
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def post(url: str, clip: bytes, who: str = "a", **form: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEYS[who]}"}
    return httpx.post(
        url + "/v1/analyze", files={"video": ("c.mp4", clip)}, data={**FORM, **form}, headers=headers, timeout=120
    )


@pytest.mark.slow
def test_a_repeated_request_is_answered_from_the_cache(server: ServerProcess, testsrc_mp4: Path) -> None:
    clip, url = testsrc_mp4.read_bytes(), server.url
    first = post(url, clip)
    assert first.status_code == 200 and first.headers["x-xemo-cache"] == "miss" and "cached" not in first.json()
    before = metrics(url)
    again = post(url, clip)
    assert again.status_code == 200 and again.headers["x-xemo-cache"] == "hit"
    a, b = first.json(), again.json()
    assert same(a, b) and b["cached"] is True and b["id"] != a["id"] and b["id"] == again.headers["x-request-id"]
    assert set(b["timings"]) == {"time_to_label_s", "total_s"}
    after = metrics(url)
    assert after[HIT] == before[HIT] + 1
    assert after['xemo_requests_total{outcome="ok"}'] == before['xemo_requests_total{outcome="ok"}'] + 1
    for stage in ("ingest", "decode"):  # no decoding, no model
        key = f'xemo_stage_duration_seconds_count{{stage="{stage}"}}'
        assert after[key] == before[key], stage

    # SSE replays the same events: label first, the cues, the tokens, done last with the cached answer
    with httpx.stream(
        "POST",
        url + "/v1/analyze",
        files={"video": ("c.mp4", clip)},
        data={**FORM, "stream": "true"},
        headers={"Authorization": f"Bearer {KEYS['a']}"},
        timeout=120,
    ) as r:
        assert r.headers["x-xemo-cache"] == "hit"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[0]["type"] == "label" and events[-1]["type"] == "done" and same(events[-1]["answer"], a)
    assert [e for e in events if e["type"] == "cue"] == [{"type": "cue", **c} for c in a["cues"]]
    assert "".join(e["text"] for e in events if e["type"] == "segment") == a["explanation"]

    # and so does the WebSocket
    with connect(url.replace("http", "ws") + "/v1/stream") as ws:
        ws.send(json.dumps({"type": "start", "api_key": KEYS["a"], **FORM}))
        ws.send(clip)
        ws.send(json.dumps({"type": "end"}))
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(ws.recv(timeout=60)))
    assert closed.value.rcvd.code == 1000 and frames[-1]["answer"]["cached"] is True and same(frames[-1]["answer"], a)
    assert httpx.get(url + "/readyz").json()["running"] == 0


@pytest.mark.slow
def test_other_input_or_sampling_is_not_a_hit(server: ServerProcess, testsrc_mp4: Path) -> None:
    clip, url = testsrc_mp4.read_bytes(), server.url
    post(url, clip)  # cached (or already was)
    before = metrics(url)
    other = post(url, clip, transcript="This is terrible.")
    assert other.headers["x-xemo-cache"] == "miss" and "cached" not in other.json()
    sampled = post(url, clip, temperature="0.7")
    assert "x-xemo-cache" not in sampled.headers and "cached" not in sampled.json()
    heard = post(url, clip, asr="true")  # the same form but for the asr option: another answer
    assert heard.headers["x-xemo-cache"] == "miss" and heard.json()["transcript"]["source"] == "asr"
    after = metrics(url)
    assert after[MISS] == before[MISS] + 2 and after[HIT] == before[HIT]
    assert after[INGESTS] == before[INGESTS] + 3


def test_the_asr_settings_are_part_of_the_fingerprint() -> None:
    from server.result_cache import settings_fingerprint
    from xemo.settings import load_settings

    base = settings_fingerprint(load_settings())
    assert base == settings_fingerprint(load_settings())
    for asr in ({"always": True}, {"translate": False}, {"languages": ["zh"]}):
        assert settings_fingerprint(load_settings(asr=asr)) != base, asr


@pytest.mark.slow
def test_another_api_key_never_hits_an_entry_it_did_not_make(server: ServerProcess, testsrc_mp4: Path) -> None:
    clip, url = testsrc_mp4.read_bytes(), server.url
    assert post(url, clip, "a").status_code == 200  # cached for key a (or already was)
    assert post(url, clip, "a").headers["x-xemo-cache"] == "hit"
    other = post(url, clip, "b")  # a hit here would tell key b that key a uploaded this clip
    assert other.status_code == 200 and other.headers["x-xemo-cache"] == "miss" and "cached" not in other.json()
    assert post(url, clip, "b").headers["x-xemo-cache"] == "hit"  # key b's own entry


def test_lru_and_ttl() -> None:
    async def main() -> None:
        now = [0.0]
        c = MemoryResultCache(entries=2, ttl_s=10, clock=lambda: now[0])
        for k in "abc":
            await c.put(k, [{"type": "done", "answer": {"id": k}}])
        assert await c.get("a") is None and len(c) == 2  # the least recently used went first
        got = await c.get("b")
        assert got == [{"type": "done", "answer": {"id": "b"}}]
        got[0]["answer"]["id"] = "changed"  # a replay edits its copy, never the stored events
        assert (await c.get("b"))[0]["answer"]["id"] == "b"
        now[0] = 11.0
        assert await c.get("b") is None and await c.get("c") is None  # past the time to live

    asyncio.run(main())


def test_the_key_separates_roles_and_options() -> None:
    opts = {"transcript": None, "labels": None, "max_tokens": None}
    assert cache_key(b"x", None, opts) != cache_key(None, b"x", opts)  # the same bytes as video or as audio
    assert cache_key(b"ab", b"c", opts) != cache_key(b"a", b"bc", opts)  # boundaries count
    assert cache_key(b"x", None, opts) != cache_key(b"x", None, {**opts, "max_tokens": 5})
    assert cache_key(b"x", None, opts) == cache_key(b"x", None, dict(reversed(opts.items())))
    # the tenant and the settings fingerprint are part of the key: one API key never hits another's entry
    assert cache_key(b"x", None, opts, "key-a") != cache_key(b"x", None, opts, "key-b")
    assert cache_key(b"x", None, opts, "a", "f1") != cache_key(b"x", None, opts, "a", "f2")
    assert cache_key(b"x", None, opts, "ab", "") != cache_key(b"x", None, opts, "a", "b")
