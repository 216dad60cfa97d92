"""The page at `/` in a real browser (Debian's chromium driven by Playwright) against a real `xemo serve` process.

Playwright's own browser downloads are never used: the browser is the system chromium (`make sysdeps`), launched
with Chromium's fake camera and microphone so the recording path runs too. Every upload test saves a screenshot
under its tmp dir (`page.png`; the generated clip also `page-phone.png` at phone width).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import media
import pytest
from playwright import sync_api as playwright_api
from servers import ServerProcess, start_server

pytestmark = pytest.mark.slow
KEY = "k-page-0123"
MAX_BYTES = 2_000_000
CHROMIUM = os.environ.get("XEMO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SAMPLE = media.SAMPLES / "sample_00000007.mp4"
ANSWER_TIMEOUT_MS = 420_000  # the lite pipeline on a loaded 2-core machine
MODALITIES = ("visual", "auditory", "verbal")
MAX_TOKENS = 48  # two or three sentences: enough to cite cues, short enough for a loaded CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory,
        "page",
        {
            "XEMO_SERVER__API_KEYS": json.dumps([KEY]),
            "XEMO_INGEST__MAX_BYTES": str(MAX_BYTES),
            "XEMO_SERVER__REQUEST_TIMEOUT_S": "600",  # a loaded 2-core machine; the browser waits as long
        },
        ready_timeout=600,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: `make sysdeps` installs Debian's chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    ctx.grant_permissions(["camera", "microphone"], origin=server.url)
    pg = ctx.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.frames_in = []  # type: ignore[attr-defined]

    def on_ws(ws: Any) -> None:
        ws.on("framereceived", lambda payload: pg.frames_in.append(payload))  # type: ignore[attr-defined]

    pg.on("websocket", on_ws)
    yield pg
    ctx.close()


def open_page(page: Any, key: str | None = KEY) -> None:
    page.goto("/")
    page.wait_for_selector("#key-row:not([hidden])")  # auth is on: the page asks for a key
    if key:
        page.get_by_label("API key").fill(key)


def wait_finished(page: Any) -> str:
    page.wait_for_function(
        "() => ['done', 'error'].includes(document.documentElement.dataset.state)", timeout=ANSWER_TIMEOUT_MS
    )
    return page.evaluate("document.documentElement.dataset.state")


def received(page: Any) -> list[dict[str, Any]]:
    return [json.loads(f) for f in page.frames_in if isinstance(f, str)]


def analyze_file(page: Any, clip: Path, transcript: str | None = None, labels: str | None = None) -> str:
    open_page(page)
    page.get_by_test_id("file-input").set_input_files(str(clip))
    if transcript:
        page.get_by_label("Transcript").fill(transcript)
    if labels:
        page.get_by_label("Label set").fill(labels)
    page.get_by_label("Explanation length").fill(str(MAX_TOKENS))
    page.get_by_test_id("analyze-button").click()
    return wait_finished(page)


def cue_layout(page: Any) -> dict[str, Any]:
    """Each cue bar's span (its data attributes) and its box relative to its lane's track."""
    return page.evaluate(
        """() => {
        const out = [];
        for (const b of document.querySelectorAll('[data-testid=cue]')) {
          const t = b.closest('.track').getBoundingClientRect(), r = b.getBoundingClientRect();
          out.push({id: b.dataset.cueId, modality: b.dataset.modality, start: +b.dataset.start, end: +b.dataset.end,
                    timed: b.dataset.timed === 'true', left: (r.left - t.left) / t.width, width: r.width / t.width,
                    px: r.width, label: b.getAttribute('aria-label')});
        }
        return {cues: out, duration: document.querySelector('[data-testid=player]').duration};
      }"""
    )


def check_answer(page: Any, out: Path) -> dict[str, Any]:
    """What every successful upload must show; returns the answer the server sent."""
    frames = received(page)
    assert page.errors == [], page.errors
    page.screenshot(path=str(out / "page.png"), full_page=True)
    types = [f["type"] for f in frames]
    assert types and types[-1] == "done", types
    answer = frames[-1]["answer"]
    label = page.get_by_test_id("label").text_content().strip()
    assert label == answer["emotion"]["label"]
    for name, p in answer["emotion"]["scores"].items():
        bar = page.get_by_test_id(f"score-{name}")
        assert bar.count() == 1 and abs(float(bar.get_attribute("data-score")) - p) < 1e-9
    assert types.index("label") < types.index("token") < types.index("done")

    layout = cue_layout(page)
    d = layout["duration"]
    assert d and d > 0
    by_id = {c["id"]: c for c in layout["cues"]}
    assert set(by_id) == {c["id"] for c in answer["cues"]}
    for c in answer["cues"]:
        bar = by_id[c["id"]]
        assert bar["modality"] == c["modality"] and c["text"] in bar["label"]
        if c["start"] is None:  # an untimed cue covers the whole clip
            assert not bar["timed"] and bar["left"] == pytest.approx(0, abs=0.01) and bar["width"] > 0.98
            continue
        end = c["end"] if c["end"] is not None else c["start"]
        assert bar["start"] == pytest.approx(c["start"], abs=1e-3) and bar["end"] == pytest.approx(end, abs=1e-3)
        assert bar["left"] == pytest.approx(c["start"] / d, abs=0.01), (c, bar, d)
        if bar["px"] > 8:  # bars narrower than that are drawn at their minimum width
            assert bar["width"] == pytest.approx((end - c["start"]) / d, abs=0.01), (c, bar, d)

    shown = page.get_by_test_id("explanation").evaluate(
        "e => { const c = e.cloneNode(true); c.querySelectorAll('.kind-tag').forEach(t => t.remove());"
        " return c.textContent; }"
    )
    assert " ".join(shown.split()) == " ".join(answer["explanation"].split())
    assert shown.strip()
    assert page.get_by_test_id("error").is_hidden()
    return answer


def check_segments(page: Any, answer: dict[str, Any]) -> None:
    """Each segment carries its cue ids; clicking one lights its cues and seeks the player to the first."""
    frames = received(page)
    segs = [f for f in frames if f["type"] == "segment"]
    assert segs, "the server sent no `segment` events"
    shown = page.get_by_test_id("segment")
    assert shown.count() == len(answer["segments"])
    for i, s in enumerate(answer["segments"]):
        assert shown.nth(i).get_attribute("data-cue-ids").split() == s["cue_ids"]
        assert shown.nth(i).get_attribute("data-kind") == s["kind"]
    starts = {c["id"]: c["start"] for c in answer["cues"] if c["start"] is not None}
    cited = [i for i, s in enumerate(answer["segments"]) if any(x in starts for x in s["cue_ids"])]
    assert cited, "no segment cites a cue with a time span"
    for i in cited[:3]:
        target = min(starts[x] for x in answer["segments"][i]["cue_ids"] if x in starts)
        page.get_by_test_id("player").evaluate("v => { v.pause(); v.currentTime = 0; }")
        shown.nth(i).click()
        lit = page.eval_on_selector_all("[data-testid=cue].lit", "bs => bs.map(b => b.dataset.cueId)")
        assert set(lit) == set(answer["segments"][i]["cue_ids"])
        now = page.get_by_test_id("player").evaluate("v => v.currentTime")
        assert now == pytest.approx(target, abs=0.05), (i, target, now)
    # the keyboard does the same: Enter on a focused segment
    i = cited[-1]
    target = min(starts[x] for x in answer["segments"][i]["cue_ids"] if x in starts)
    page.mouse.move(0, 0)
    page.get_by_test_id("player").evaluate("v => { v.currentTime = 0; }")
    shown.nth(i).focus()
    page.keyboard.press("Enter")
    assert page.get_by_test_id("player").evaluate("v => v.currentTime") == pytest.approx(target, abs=0.05)
    for s in page.locator("[data-testid=segment][data-kind=absence]").all():
        assert "not perceived" in s.inner_text()


def modalities(answer: dict[str, Any]) -> set[str]:
    return {c["modality"] for c in answer["cues"]}


def test_generated_clip_shows_label_cues_on_the_timeline_and_the_explanation(
    page: Any, face_mp4: Path, tmp_path: Path
) -> None:
    state = analyze_file(page, face_mp4, transcript=media.SENTENCE)
    assert state == "done", page.get_by_test_id("error").inner_text()
    answer = check_answer(page, tmp_path)
    assert modalities(answer) == set(MODALITIES), answer["cues"]
    assert sum(f["type"] == "token" for f in received(page)) > 1  # it streamed in pieces
    # phone width: nothing sticks out sideways, the timeline is still there
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.get_by_test_id("timeline").bounding_box()["width"] <= 390
    page.screenshot(path=str(tmp_path / "page-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    # hovering a cue tells its text, strength and evidence
    cue = answer["cues"][0]
    page.locator(f"[data-testid=cue][data-cue-id={cue['id']}]").hover()
    tip = page.locator("#tip")
    assert tip.is_visible() and cue["text"] in tip.inner_text() and "strength" in tip.inner_text()
    check_segments(page, answer)


def test_shared_sample_shows_every_modality_and_segments_seek_the_player(page: Any, tmp_path: Path) -> None:
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} not present (research-only sample, not in the repository)")
    meta = json.loads(SAMPLE.with_suffix(".json").read_text())
    state = analyze_file(page, SAMPLE, transcript=meta["subtitle"])
    assert state == "done", page.get_by_test_id("error").inner_text()
    answer = check_answer(page, tmp_path)
    assert modalities(answer) == set(MODALITIES), answer["cues"]
    check_segments(page, answer)


def test_drop_a_file_on_the_page(page: Any, face_mp4: Path) -> None:
    open_page(page)
    data = list(face_mp4.read_bytes())
    handle = page.evaluate_handle(
        "bytes => { const dt = new DataTransfer();"
        " dt.items.add(new File([new Uint8Array(bytes)], 'dropped.mp4', {type: 'video/mp4'})); return dt; }",
        data,
    )
    page.dispatch_event("[data-testid=drop-zone]", "drop", {"dataTransfer": handle})
    assert "dropped.mp4" in page.get_by_test_id("chosen").inner_text()
    assert page.get_by_test_id("analyze-button").is_enabled()
    page.wait_for_function("() => document.querySelector('[data-testid=player]').duration > 3")


def _hls(tmp: Path) -> Path:
    p = tmp / "playlist.mp4"  # a playlist dressed as a video: it must never be opened by FFmpeg
    p.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    return p


def _truncated(tmp: Path, clip: Path) -> Path:
    p = tmp / "truncated.mp4"
    p.write_bytes(clip.read_bytes()[:4000])
    return p


def _huge(tmp: Path) -> Path:
    p = tmp / "huge.mp4"
    p.write_bytes(os.urandom(MAX_BYTES + 300_000))
    return p


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("hls", 415, "not supported"),
        ("truncated", 422, "could not be used"),
        ("huge", 413, "too large"),
        ("labels", 422, "labels"),
        ("nokey", 401, "API key"),
    ],
)
def test_bad_input_gives_a_readable_error(
    page: Any, face_mp4: Path, tmp_path: Path, case: str, status: int, words: str
) -> None:
    clip = {"hls": lambda: _hls(tmp_path), "truncated": lambda: _truncated(tmp_path, face_mp4),
            "huge": lambda: _huge(tmp_path)}.get(case, lambda: face_mp4)()
    open_page(page, key=None if case == "nokey" else KEY)
    page.get_by_test_id("file-input").set_input_files(str(clip))
    if case == "labels":
        page.get_by_label("Label set").fill("only-one")
    page.get_by_test_id("analyze-button").click()
    assert wait_finished(page) == "error"
    err = page.get_by_test_id("error")
    assert err.is_visible() and err.get_attribute("data-status") == str(status)
    text = err.inner_text()
    assert words.lower() in text.lower(), text
    assert re.search(r"Request id [0-9a-f]{32}", text), text  # the id that finds it in the server's log
    assert "{" not in text  # a sentence, not a JSON dump
    if case == "nokey":
        assert page.evaluate("document.activeElement.id") == "api-key-input"
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def test_every_status_the_server_can_send_has_a_readable_title(page: Any) -> None:
    open_page(page)
    for status in (413, 415, 422, 429, 503):
        e = page.evaluate(
            "s => window.xemo.describeError(s, {error: {type: 't', message: 'the detail', request_id: 'r'}})", status
        )
        assert e["status"] == status and e["title"].endswith(".") and e["detail"] == "The detail."
    assert "try again" in page.evaluate("window.xemo.describeError(429, null).title")
    assert "try again" in page.evaluate("window.xemo.describeError(503, null).title")


def test_fake_camera_records_and_gets_an_answer(page: Any, tmp_path: Path) -> None:
    open_page(page)
    timer = page.get_by_test_id("record-timer")
    assert "10 s" in timer.inner_text()  # the limit is on screen before recording starts
    page.evaluate("document.getElementById('app').dataset.recordLimit = '3'")  # a short limit keeps the test quick
    page.get_by_test_id("record-button").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=record-timer]').textContent.startsWith('Recording')"
    )
    assert "of 3 s" in timer.inner_text()
    assert page.get_by_test_id("analyze-button").is_disabled()
    # nobody presses stop: the limit ends the recording
    page.wait_for_function(
        "() => document.querySelector('[data-testid=chosen]').textContent.includes('recording.webm')", timeout=20_000
    )
    assert "Recorded" in timer.inner_text()
    page.get_by_label("Explanation length").fill(str(MAX_TOKENS))
    page.get_by_test_id("analyze-button").click()
    state = wait_finished(page)
    assert state == "done", page.get_by_test_id("error").inner_text()
    frames = received(page)
    answer = frames[-1]["answer"]
    assert page.get_by_test_id("label").text_content().strip() == answer["emotion"]["label"]
    assert page.errors == []
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def test_keyboard_order_labels_and_the_docs_stay(page: Any, server: ServerProcess) -> None:
    open_page(page, key=None)
    order = []
    for _ in range(10):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    want = ["file-input", "record-button", "transcript-input", "labels-input", "max-tokens-input", "api-key-input"]
    assert [x for x in order if x in want] == want, order
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, button')].filter(e => {
             const byLabel = e.id && document.querySelector(`label[for="${e.id}"]`);
             return !(byLabel || e.getAttribute('aria-label') || e.textContent.trim());
           }).map(e => e.id)"""
    )
    assert unnamed == []
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.request.get(server.url + "/docs").status == 200
    r = page.request.get(server.url + "/")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert page.request.get(server.url + "/ui/../app.py").status == 404
    assert page.request.get(server.url + "/ui/missing.js").status == 404
