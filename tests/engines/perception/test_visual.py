"""VisualPerceiver on real clips: the astronaut face clip smiles, the test pattern has no face and no cues."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import media
import numpy as np
import pytest

from engines.errors import BadRequest
from engines.perception.visual import VisualPerceiver, VisualResult
from xemo.settings import LiteSettings

SAMPLE = media.SAMPLES / "sample_00000007.mp4"


def uniform_frames(path: Path, n: int = 16) -> tuple[np.ndarray, list[float]]:
    """Decode every frame with PyAV and keep n spread uniformly over the clip (RGB uint8, times in seconds)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames, times = [], []
        for f in c.decode(stream):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * stream.time_base))
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return np.stack([frames[i] for i in idx]), [round(times[i], 3) for i in idx]


@pytest.fixture(scope="module")
def perceiver(tmp_path_factory: pytest.TempPathFactory) -> VisualPerceiver:
    # one ONNX export per test session: the FER tests use the same cache directory
    p = VisualPerceiver(LiteSettings(cache_dir=tmp_path_factory.getbasetemp() / "xemo_cache"))
    yield p
    p.close()


@pytest.fixture(scope="module")
def face_frames(face_mp4: Path) -> tuple[np.ndarray, list[float]]:
    return uniform_frames(face_mp4)


@pytest.fixture(scope="module")
def pattern_frames(testsrc_mp4: Path) -> tuple[np.ndarray, list[float]]:
    return uniform_frames(testsrc_mp4)


def check_cues(res: VisualResult) -> None:
    for c in res.cues:
        assert c.modality == "visual" and c.text and c.evidence
        assert c.start is not None and c.end is not None and c.start <= c.end
        assert 0.0 <= c.strength <= 1.0


def test_astronaut_clip_smiles(perceiver: VisualPerceiver, face_frames: tuple[np.ndarray, list[float]]) -> None:
    frames, times = face_frames
    res = perceiver.perceive(frames, times)
    assert res.face_found and res.faces_per_frame == [1] * 16
    texts = [c.text for c in res.cues]
    assert any("smile" in t for t in texts), texts
    assert any("corners of the mouth turn up" in t for t in texts), texts
    check_cues(res)
    smile = next(c for c in res.cues if c.evidence["action"] == "smile")
    assert smile.strength > 0.6 and smile.evidence["fer_happy"] > 0.8
    assert max(res.expression, key=res.expression.get) == "happy"
    assert sum(res.expression.values()) == pytest.approx(1, abs=1e-3)
    assert len(res.per_frame) == 16 and res.per_frame[0]["corner_lift"] > 0.05 and "fer" in res.per_frame[0]
    assert "16/16" in res.summary and "happy" in res.summary
    assert json.loads(json.dumps(res.to_dict()))["cues"][0]["modality"] == "visual"  # plain JSON types only
    # a held smile on a still photograph: no blinks, nods or head shakes are invented
    assert not {"blink", "nod", "shake"} & {c.evidence["action"] for c in res.cues}


def test_test_pattern_has_no_face_and_no_cues(perceiver: VisualPerceiver,
                                              pattern_frames: tuple[np.ndarray, list[float]]) -> None:
    res = perceiver.perceive(*pattern_frames)
    assert not res.face_found and res.cues == [] and res.expression == {}
    assert res.faces_per_frame == [0] * 16 and "no face" in res.summary


def test_batch_equals_single_calls(perceiver: VisualPerceiver, face_frames, pattern_frames) -> None:
    batch = perceiver.perceive_batch([face_frames, pattern_frames, (face_frames[0][:4], face_frames[1][:4])])
    single = perceiver.perceive(*face_frames)
    assert [c.text for c in batch[0].cues] == [c.text for c in single.cues]
    assert batch[0].expression == single.expression
    assert not batch[1].face_found and batch[2].face_found and len(batch[2].per_frame) == 4


def test_concurrent_callers_get_the_same_answer(perceiver: VisualPerceiver, face_frames) -> None:
    ref = perceiver.perceive(*face_frames)
    out: list[VisualResult] = []
    threads = [threading.Thread(target=lambda: out.append(perceiver.perceive(*face_frames))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == 3
    for r in out:
        assert [c.to_dict() for c in r.cues] == [c.to_dict() for c in ref.cues]


def test_a_clip_split_over_free_graphs_is_meshed_as_by_one(face_frames) -> None:
    from engines.perception.visual.face import FaceMesher

    one, two = FaceMesher(pool_size=1), FaceMesher(pool_size=2)
    try:
        a, b = one.detect(face_frames[0]), two.detect(face_frames[0])
        assert two._created == 2  # the second graph really took a share
        assert len(a) == len(b) == len(face_frames[0])
        for x, y in zip(a, b, strict=True):
            assert x.n_faces == y.n_faces and x.box == y.box
            assert x.landmarks is not None and np.array_equal(x.landmarks, y.landmarks)
    finally:
        one.close()
        two.close()


def test_bad_input_is_a_typed_error(perceiver: VisualPerceiver) -> None:
    ok = np.zeros((2, 64, 64, 3), np.uint8)
    for frames, times in [
        (ok.astype(np.float32), [0, 1]),  # wrong dtype
        (ok[..., 0], [0, 1]),  # no channel axis
        (ok, [0.0]),  # times do not match frames
        (ok, [1.0, 0.0]),  # time runs backwards
        (ok, [0.0, float("nan")]),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 1]),  # too small to hold a face
        ([[1, 2]], [0]),  # not an array
    ]:
        with pytest.raises(BadRequest):
            perceiver.perceive(frames, times)  # type: ignore[arg-type]
    empty = perceiver.perceive(np.zeros((0, 64, 64, 3), np.uint8), [])
    assert not empty.face_found and empty.cues == [] and empty.summary == "no frames"


@pytest.mark.skipif(not SAMPLE.is_file(), reason="shared sample clip not present")
def test_shared_sample_smiles(perceiver: VisualPerceiver) -> None:
    frames, times = uniform_frames(SAMPLE)
    res = perceiver.perceive(frames, times)
    for c in res.cues:
        print(f"{c.start:5.2f}-{c.end:5.2f}  {c.strength:.2f}  {c.text}")
    assert res.face_found
    assert any("smile" in c.text for c in res.cues)
    assert max(res.expression, key=res.expression.get) == "happy"
    check_cues(res)


def test_geometry_alone_still_sees_the_smile(face_frames: tuple[np.ndarray, list[float]]) -> None:
    p = VisualPerceiver(LiteSettings(use_fer=False))
    try:
        res = p.perceive(*face_frames)
    finally:
        p.close()
    assert p.fer_runtime is None and res.expression == {} and "fer" not in res.per_frame[0]
    smile = next(c for c in res.cues if c.evidence["action"] == "smile")
    assert smile.evidence["basis"] == "geometry" and "fer_happy" not in smile.evidence


def concat(out: Path, first: Path, second: Path) -> Path:
    media.ffmpeg("-i", str(first), "-i", str(second), "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


@pytest.fixture(scope="module")
def cut_frames(media_dir: Path, face_png: Path) -> tuple[np.ndarray, list[float]]:
    """2 s of the astronaut clip, then a hard cut to 2 s of the same framing as a tinted monochrome print."""
    from PIL import Image, ImageOps

    tinted = media_dir / "face_tinted.png"
    ImageOps.colorize(ImageOps.grayscale(Image.open(face_png)), black=(10, 0, 60), white=(200, 255, 230)).save(tinted)
    first = media.face_clip(media_dir / "shot_a.mp4", face_png, seconds=2.0)
    second = media.face_clip(media_dir / "shot_b.mp4", tinted, seconds=2.0)
    return uniform_frames(concat(media_dir / "shot_cut.mp4", first, second))


@pytest.fixture(scope="module")
def switch_frames(media_dir: Path, face_png: Path) -> tuple[np.ndarray, list[float]]:
    """A still shot of a large face on the left and a small one on the right, then the same two the other way
    round: within one shot, the largest face jumps from one person to the other."""
    from PIL import Image, ImageOps

    head = Image.open(face_png).crop((100, 0, 400, 300))
    clips = []
    for name, big_left in (("left", True), ("right", False)):
        canvas = Image.new("RGB", (640, 360), (90, 100, 110))
        big, small = head.resize((300, 300)), ImageOps.mirror(head).resize((170, 170))
        if big_left:
            canvas.paste(big, (20, 30))
            canvas.paste(small, (440, 100))
        else:
            canvas.paste(small, (20, 100))
            canvas.paste(ImageOps.mirror(big), (320, 30))
        png, mp4 = media_dir / f"two_{name}.png", media_dir / f"two_{name}.mp4"
        canvas.save(png)
        media.ffmpeg("-loop", "1", "-framerate", "25", "-t", "2", "-i", str(png), "-c:v", "libx264",
                     "-pix_fmt", "yuv420p", str(mp4))
        clips.append(mp4)
    return uniform_frames(concat(media_dir / "face_switch.mp4", *clips))


def crossing(res: VisualResult, t: float) -> list[str]:
    return [c.text for c in res.cues if c.start is not None and c.end is not None and c.start < t < c.end]


def test_a_shot_cut_suppresses_face_cues_across_it(perceiver: VisualPerceiver, cut_frames) -> None:
    res = perceiver.perceive(*cut_frames)
    cuts = [f["t"] for f in res.per_frame if f.get("shot_cut_before")]
    assert len(cuts) == 1 and 2.0 <= cuts[0] <= 2.3, cuts
    assert any("smile" in c.text for c in res.cues)  # the face is still described, from one shot
    assert crossing(res, 2.0) == []
    assert {f["track"] for f in res.per_frame if f["t"] < 2.0} != {f["track"] for f in res.per_frame if f["t"] > 2.0}
    assert "1 shot cut" in res.summary
    check_cues(res)


def test_a_switch_to_another_face_suppresses_cues_across_it(perceiver: VisualPerceiver, switch_frames) -> None:
    res = perceiver.perceive(*switch_frames)
    assert not any(f.get("shot_cut_before") for f in res.per_frame)  # same shot: the face jump tells them apart
    assert any("smile" in c.text for c in res.cues)
    assert crossing(res, 2.0) == []
    assert len({f["track"] for f in res.per_frame}) == 2
    # a still camera: only the two samples around the swap, where everything around the faces changes, may
    # look like camera motion
    assert [f["t"] for f in res.per_frame if f.get("camera_moving")] in ([], [1.84, 2.12])


def test_camera_motion_is_not_read_as_head_motion(perceiver: VisualPerceiver, face_frames) -> None:
    # face_clip zooms in towards the top-left corner: the background moves, so head pose is not read
    res = perceiver.perceive(*face_frames)
    assert sum(bool(f.get("camera_moving")) for f in res.per_frame) >= 12
    assert "camera moving" in res.summary
    assert not {"nod", "shake", "head_tilt", "head_turn", "look_down"} & {c.evidence["action"] for c in res.cues}


def test_visual_cap_keeps_the_strongest(face_frames, tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.getbasetemp() / "xemo_cache"
    full = VisualPerceiver(LiteSettings(cache_dir=cache, max_visual_cues=20))
    one = VisualPerceiver(LiteSettings(cache_dir=cache, max_visual_cues=1))
    try:
        every, capped = full.perceive(*face_frames), one.perceive(*face_frames)
    finally:
        full.close()
        one.close()
    assert len(every.cues) >= 2 and len(capped.cues) == 1
    assert capped.cues[0].strength == max(c.strength for c in every.cues)


def test_a_face_too_small_to_read_gives_no_cues(face_frames, tmp_path_factory: pytest.TempPathFactory) -> None:
    p = VisualPerceiver(LiteSettings(cache_dir=tmp_path_factory.getbasetemp() / "xemo_cache", min_face_px=600))
    try:
        res = p.perceive(*face_frames)
    finally:
        p.close()
    assert res.face_found and res.cues == [] and res.expression == {}
    assert "too small" in res.summary and all(f.get("too_small") for f in res.per_frame)


def test_a_rolling_camera_is_not_read_as_a_head_tilt(perceiver: VisualPerceiver, face_png: Path) -> None:
    """The photograph held still for 2 s, then the camera rocks by 12 degrees every other sample: the face's
    roll swings with it, but the background turns too, so no head tilt is claimed."""
    from PIL import Image

    img = Image.open(face_png)
    frames = np.stack([np.asarray(img.rotate(12.0 if i >= 8 and i % 2 else 0.0, resample=Image.BICUBIC))
                       for i in range(16)])
    times = [i * 0.25 for i in range(16)]
    res = perceiver.perceive(frames, times)
    rolls = [f["roll"] for f in res.per_frame]
    assert max(rolls) - min(rolls) > 10  # the measured roll does swing
    assert [bool(f.get("camera_moving")) for f in res.per_frame] == [False] * 8 + [True] * 8
    assert not [c.text for c in res.cues if c.evidence["action"] in ("head_tilt", "nod", "shake", "head_turn")]
    assert any("smile" in c.text for c in res.cues)  # the expression is still read
