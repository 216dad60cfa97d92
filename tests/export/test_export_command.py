"""`xemo export`: graphs with dynamic batch and audio length, a manifest with IO, hashes and parity, clear
refusals for TensorRT without a GPU and for bad arguments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import manifest as mf
from export.parity import torch_fn
from xemo.commands.export import run


def test_manifest_records_io_hashes_and_parity(exported: Path, tiny: dict) -> None:
    m = json.loads((exported / "manifest.json").read_text())
    assert m["opset"] == 18 and m["profile"] == "xemogpt"
    assert m["contract"]["dim"] == 64 and m["contract"]["num_frames"] == 16 and m["contract"]["image_size"] == 224
    video, audio = m["graphs"]["video"], m["graphs"]["audio"]
    assert [t["name"] for t in video["inputs"]] == ["pixel_values"]
    assert video["inputs"][0]["shape"] == ["batch", 16, 3, 224, 224]
    assert video["outputs"][0] == {"name": "tokens", "dtype": "float32", "shape": ["batch", 16, 64]}
    assert [t["name"] for t in audio["inputs"]] == ["input_values", "attention_mask"]
    assert [t["name"] for t in audio["outputs"]] == ["tokens", "valid"]
    assert audio["outputs"][0]["shape"] == ["batch", "frames", 64]
    # source weight hashes are those of the configured files
    assert m["sources"]["checkpoint"] == mf.source_hash(tiny["checkpoint"])
    assert set(m["sources"]) == {"clip", "hubert", "checkpoint"}
    # graph files hash to what the manifest says
    for g in (video, audio):
        for name, sha in g["files"].items():
            assert mf.sha256_file(exported / name) == sha
    # parity at batch 1, 3, 8 and mixed (padded) audio lengths, all within tolerance
    assert [r["batch"] for r in video["parity"]] == [1, 3, 8]
    assert {r["case"] for r in audio["parity"]} >= {"batch1", "batch3-mixed", "batch8-mixed"}
    for r in video["parity"] + audio["parity"]:
        assert r["passed"] and r["max_abs"] <= 1e-3 and r["one_minus_cos"] <= 1e-4
    assert video["parity_passed"] and audio["parity_passed"]


def test_dynamic_axes_hold_at_untraced_shapes(exported: Path, torch_front_ends) -> None:
    """Batch and audio length not seen at export time still run in ORT and match PyTorch."""
    sess_v = ort.InferenceSession(str(exported / "video.onnx"), providers=["CPUExecutionProvider"])
    sess_a = ort.InferenceSession(str(exported / "audio.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    px = rng.standard_normal((5, 16, 3, 224, 224), dtype=np.float32)
    (got,) = sess_v.run(None, {"pixel_values": px})
    (ref,) = torch_fn(torch_front_ends.video)({"pixel_values": px})
    assert got.shape == (5, 16, 64) and np.abs(got - ref).max() < 1e-4
    for lens in ([23456, 7001], [40000, 12345, 1600, 39999, 2000, 30000]):
        t = max(lens)
        x = rng.standard_normal((len(lens), t), dtype=np.float32)
        mask = np.zeros((len(lens), t), np.int64)
        for i, n in enumerate(lens):
            mask[i, :n] = 1
            x[i, n:] = 0
        tok, valid = sess_a.run(None, {"input_values": x, "attention_mask": mask})
        rtok, rvalid = torch_fn(torch_front_ends.audio)({"input_values": x, "attention_mask": mask})
        assert (valid == rvalid).all()
        assert valid.sum(1).tolist() == [
            int(torch_front_ends.audio.hubert._get_feat_extract_output_lengths(torch.tensor(n))) for n in lens
        ]
        assert np.abs(tok[valid] - rtok[valid]).max() < 1e-4


def test_parity_failure_fails_the_command_and_marks_the_graphs(
    tmp_path: Path, exported: Path, make_settings, capsys: pytest.CaptureFixture
) -> None:
    """Tolerances tighter than float32 round-off: the command exits 1 and the manifest says not servable.
    (Re-run on a copy of the export: the graphs are reused, parity is measured again.)"""
    shutil.copytree(exported, tmp_path, dirs_exist_ok=True)
    rc = run(make_settings(atol=1e-12, cos_tol=1e-16), tmp_path, "onnx", "fp32")
    assert rc == 1
    err = capsys.readouterr().err
    assert "parity FAILED" in err and "reusing video.onnx" in err
    m = mf.load(tmp_path)
    assert not m.graphs["video"].parity_passed and not m.graphs["audio"].parity_passed
    assert any(not r["passed"] for r in m.graphs["video"].parity)


def test_tensorrt_without_gpu_is_skipped_with_a_reason(
    tmp_path: Path, make_settings, capsys: pytest.CaptureFixture
) -> None:
    rc = run(make_settings(), tmp_path / "trt", "tensorrt", "fp16")
    err = capsys.readouterr().err
    assert rc == 3
    assert "TensorRT export skipped" in err and ("tensorrt" in err and ("not installed" in err or "GPU" in err))
    assert not (tmp_path / "trt" / "manifest.json").exists()


@pytest.mark.parametrize(("fmt", "precision"), [("onnx", "fp16"), ("onnx", "int4"), ("plan", "fp32")])
def test_bad_arguments_exit_2(
    tmp_path: Path, make_settings, fmt: str, precision: str, capsys: pytest.CaptureFixture
) -> None:
    assert run(make_settings(), tmp_path, fmt, precision) == 2
    assert "error:" in capsys.readouterr().err


def test_lite_profile_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from xemo.settings import Settings

    assert run(Settings(profile="lite"), tmp_path, "onnx", "fp32") == 2
    assert "profile: xemogpt" in capsys.readouterr().err


def test_exported_dir_is_relocatable(tmp_path: Path, exported: Path) -> None:
    """External-data references are relative: a copied directory still loads."""
    dst = tmp_path / "copy"
    shutil.copytree(exported, dst)
    sess = ort.InferenceSession(str(dst / "video.onnx"), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"pixel_values": np.zeros((1, 16, 3, 224, 224), np.float32)})
    assert out.shape == (1, 16, 64)


def test_format_all_writes_onnx_and_records_why_tensorrt_was_skipped(
    tmp_path: Path, exported: Path, make_settings, capsys: pytest.CaptureFixture
) -> None:
    from export.tensorrt_build import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present here")
    shutil.copytree(exported, tmp_path, dirs_exist_ok=True)
    assert run(make_settings(), tmp_path, "all", "fp16") == 3
    assert "TensorRT engines skipped" in " ".join(capsys.readouterr().err.split())
    m = mf.load(tmp_path)
    assert m.graphs["video"].parity_passed and m.graphs["audio"].parity_passed
    assert m.tensorrt == [] and m.skipped and m.skipped[0].startswith("tensorrt: ")
