"""Parity metrics: valid-frame comparison, mask mismatch, tolerance decisions, the cases it covers."""

from __future__ import annotations

import numpy as np

from export.onnx_export import audio_spec, video_spec
from export.parity import cases, check, compare


def test_compare_ignores_padded_frames_but_not_masks() -> None:
    rng = np.random.default_rng(0)
    tok = rng.standard_normal((2, 5, 8)).astype(np.float32)
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
    other = tok.copy()
    other[1, 3] += 100.0  # a padded frame: does not count
    max_abs, omc, ok = compare([tok, valid], [other, valid])
    assert max_abs == 0.0 and omc < 1e-12 and ok
    other[1, 1] += 0.01
    max_abs, omc, ok = compare([tok, valid], [other, valid])
    assert np.isclose(max_abs, 0.01, atol=1e-6) and omc > 0 and ok
    flipped = valid.copy()
    flipped[1, 2] = True
    assert compare([tok, valid], [tok, flipped]) == (float("inf"), float("inf"), False)


def test_cosine_catches_a_scaled_output() -> None:
    a = np.ones((1, 4, 8), np.float32)
    b = a.copy()
    b[0, 0, :4] = -1  # a flipped half: max abs 2, cosine 0 for that token
    max_abs, omc, _ = compare([a], [b])
    assert max_abs == 2.0 and np.isclose(omc, 1.0)


def test_cases_cover_batches_and_padded_lengths() -> None:
    v = cases(video_spec(16, 32, 8, max_batch=8))
    assert [x["pixel_values"].shape[0] for _, x in v] == [1, 3, 8]
    a = dict(cases(audio_spec(8, max_batch=8, max_samples=12 * 16000)))
    mask = a["batch8-mixed"]["attention_mask"]
    assert mask.shape[0] == 8 and len(set(mask.sum(1).tolist())) > 4  # mixed lengths in one padded batch
    assert (a["batch8-mixed"]["input_values"][mask == 0] == 0).all()
    assert a["batch1-long"]["input_values"].shape[1] > mask.shape[1]  # a longer time axis too
    small = cases(audio_spec(8, max_batch=3, max_samples=16000))
    assert all(x["input_values"].shape[0] <= 3 and x["input_values"].shape[1] <= 16000 for _, x in small)


def test_check_fails_rows_outside_tolerance() -> None:
    spec = video_spec(16, 8, 4, max_batch=3)

    def ref(x: dict) -> list[np.ndarray]:
        return [x["pixel_values"].reshape(x["pixel_values"].shape[0], 16, -1)[..., :4] * 1.0]

    def off(x: dict) -> list[np.ndarray]:
        return [ref(x)[0] + 2e-3]

    rows = check(spec, ref, ref, atol=1e-3, cos_tol=1e-4)
    assert [r.batch for r in rows] == [1, 3] and all(r.passed for r in rows)
    rows = check(spec, ref, off, atol=1e-3, cos_tol=1e-4)
    assert not any(r.passed for r in rows)
    assert all(r.max_abs > 1e-3 for r in rows)


def test_a_candidate_that_raises_is_a_failed_row_not_a_crash() -> None:
    spec = video_spec(16, 8, 4, max_batch=3)

    def ref(x: dict) -> list[np.ndarray]:
        return [np.zeros((x["pixel_values"].shape[0], 16, 4), np.float32)]

    def broken(x: dict) -> list[np.ndarray]:
        if x["pixel_values"].shape[0] > 1:
            raise RuntimeError("Reshape node: requested shape {2,16,64}")
        return ref(x)

    rows = check(spec, ref, broken, atol=1e-3, cos_tol=1e-4)
    assert [r.passed for r in rows] == [True, False]
    assert rows[1].error.startswith("RuntimeError: Reshape node") and rows[1].max_abs == float("inf")
