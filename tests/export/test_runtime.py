"""engines/runtime: the onnx runtime serves what torch serves, refuses damaged or mismatched artefacts with a
clear error, and reports (or refuses) providers that ONNX Runtime silently dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.errors import ArtifactError, RuntimeNotReady
from engines.runtime.factory import load_front_ends
from engines.runtime.onnx import OrtGraph, check_providers
from export.sources import weight_sources


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(2, 16, 3, 224, 224, generator=g)
    x = torch.randn(3, 20000, generator=g)
    mask = torch.ones(3, 20000, dtype=torch.int64)
    mask[1, 9000:] = 0
    mask[2, 3000:] = 0
    x[mask == 0] = 0
    return px, x, mask


@pytest.fixture()
def copy_of(exported: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artefacts"
    shutil.copytree(exported, dst)
    return dst


def _load(settings, torch_front_ends, **kw):
    return load_front_ends(
        settings,
        lambda: (torch_front_ends.video, torch_front_ends.audio),
        kw.get("contract", torch_front_ends.contract),
        kw.get("sources", weight_sources(settings)),
    )


def test_onnx_runtime_matches_torch_runtime(exported: Path, make_settings, torch_front_ends) -> None:
    onnx_fe = _load(make_settings(runtime="onnx", dir=exported), torch_front_ends)
    torch_fe = _load(make_settings(runtime="torch"), torch_front_ends)
    assert (onnx_fe.runtime, torch_fe.runtime) == ("onnx", "torch")
    px, x, mask = _inputs()
    tv, ov = torch_fe.video(px), onnx_fe.video(px)
    assert isinstance(ov, torch.Tensor) and ov.shape == tv.shape == (2, 16, 64)
    assert torch.allclose(ov, tv, atol=1e-4)
    (tt, tvalid), (ot, ovalid) = torch_fe.audio(x, mask), onnx_fe.audio(x, mask)
    assert ovalid.dtype == torch.bool and torch.equal(ovalid, tvalid)
    assert tvalid.sum(1).tolist()[0] > tvalid.sum(1).tolist()[1] > tvalid.sum(1).tolist()[2] > 0
    assert torch.allclose(ot[ovalid], tt[tvalid], atol=1e-4)
    h = onnx_fe.health()
    assert h["ready"] and h["runtime"] == "onnx" and h["graphs"][0]["active"] == ["CPUExecutionProvider"]


def test_thread_counts_come_from_the_settings(exported: Path) -> None:
    g = OrtGraph(exported / "video.onnx", ["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    opts = g.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)


def test_silent_cpu_fallback_is_refused(exported: Path, make_settings, torch_front_ends) -> None:
    """No CUDA here: ORT would quietly run on CPU; we refuse, and say which provider did not load."""
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeNotReady, match="CUDAExecutionProvider did not load"):
        _load(make_settings(runtime="onnx", dir=exported, providers=providers), torch_front_ends)
    g = OrtGraph(exported / "audio.onnx", providers, 1, 1, strict=False)
    assert g.health()["ready"] is False and g.active == ["CPUExecutionProvider"]


def test_a_front_end_off_its_device_makes_the_server_not_ready(exported: Path, make_settings) -> None:
    """A graph whose configured provider is not active (a lost device; built non-strict here since this machine
    has no CUDA) turns /readyz's runtime check red and new requests get 503, with the reason."""
    from engines.runtime.factory import FrontEnds
    from engines.xemogpt.pipeline import XEmoGPTPipeline
    from server.errors import NotReady
    from server.lifecycle import ServerState

    settings = make_settings(runtime="onnx", dir=exported)
    state = ServerState(settings)
    state.pipeline, state.ready = XEmoGPTPipeline(settings), True
    cpu = OrtGraph(exported / "video.onnx", ["CPUExecutionProvider"], 1, 1)
    state.pipeline.front_ends = FrontEnds("onnx", cpu, cpu, graphs=[cpu])
    ok, body = state.readiness()
    assert ok and body["checks"]["runtime_on_device"] and body["runtime"]["device"] == "cpu"
    state.check_serving()

    lost = OrtGraph(exported / "audio.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"], 1, 1, strict=False)
    state.pipeline.front_ends = FrontEnds("onnx", cpu, lost, graphs=[cpu, lost])
    ok, body = state.readiness()
    assert not ok and body["checks"] == {**body["checks"], "models_loaded": True, "runtime_on_device": False}
    assert "CUDAExecutionProvider" in body["runtime"]["reason"]
    with pytest.raises(NotReady, match="CUDAExecutionProvider"):
        state.check_serving()


def test_check_providers() -> None:
    assert check_providers(["CPUExecutionProvider"], ["CPUExecutionProvider"]) is None
    assert check_providers(["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    msg = check_providers(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert msg is not None and "TensorrtExecutionProvider" in msg and "CUDAExecutionProvider," not in msg


def test_flipped_byte_in_weights_is_refused(copy_of: Path, make_settings, torch_front_ends) -> None:
    data = copy_of / "video.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"video.onnx.data.*does not match its sha256"):
        _load(make_settings(runtime="onnx", dir=copy_of), torch_front_ends)


def test_missing_file_and_bad_manifest_are_refused(copy_of: Path, make_settings, torch_front_ends) -> None:
    s = make_settings(runtime="onnx", dir=copy_of)
    (copy_of / "audio.onnx.data").unlink()
    with pytest.raises(ArtifactError, match="audio.onnx.data.*missing"):
        _load(s, torch_front_ends)
    (copy_of / "manifest.json").write_text('{"format_version": 1, "opset": ')
    with pytest.raises(ArtifactError, match="corrupted"):
        _load(s, torch_front_ends)
    (copy_of / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="xemo export"):
        _load(s, torch_front_ends)
    with pytest.raises(ArtifactError, match="export.dir is not set"):
        _load(make_settings(runtime="onnx"), torch_front_ends)


def test_garbage_graph_with_matching_hash_is_refused(copy_of: Path, make_settings, torch_front_ends) -> None:
    """A manifest re-hashed over a broken graph still cannot be served: ORT's load error becomes ours."""
    (copy_of / "video.onnx").write_bytes(b"\x08\x07not an onnx graph")
    m = json.loads((copy_of / "manifest.json").read_text())
    from export.onnx_export import sha256_file

    m["graphs"]["video"]["files"]["video.onnx"] = sha256_file(copy_of / "video.onnx")
    (copy_of / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="cannot load video.onnx"):
        _load(make_settings(runtime="onnx", dir=copy_of), torch_front_ends)


def test_mismatched_model_or_weights_are_refused(
    exported: Path, make_settings, torch_front_ends, tmp_path: Path, tiny: dict
) -> None:
    s = make_settings(runtime="onnx", dir=exported)
    with pytest.raises(ArtifactError, match="dim: exported 64 vs expected 2560"):
        _load(s, torch_front_ends, contract={**torch_front_ends.contract, "dim": 2560})
    other = tmp_path / "other.ckpt"
    sd = torch.load(tiny["checkpoint"], weights_only=True)
    sd["state_dict"]["audio_llm_project.bias"] += 1.0
    torch.save(sd, other)
    with pytest.raises(ArtifactError, match=r"other weights than the configured ones \(checkpoint\)"):
        _load(s, torch_front_ends, sources={**weight_sources(s), "checkpoint": other})


def test_graph_that_failed_parity_is_not_served(copy_of: Path, make_settings, torch_front_ends) -> None:
    m = json.loads((copy_of / "manifest.json").read_text())
    m["graphs"]["audio"]["parity_passed"] = False
    (copy_of / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="'audio' graph failed its parity check"):
        _load(make_settings(runtime="onnx", dir=copy_of), torch_front_ends)


def test_tensorrt_runtime_without_tensorrt_is_not_ready(exported: Path, make_settings, torch_front_ends) -> None:
    with pytest.raises(RuntimeNotReady, match="tensorrt"):
        _load(make_settings(runtime="tensorrt", dir=exported), torch_front_ends)


def test_ort_graph_accepts_numpy_and_checks_arity(exported: Path) -> None:
    g = OrtGraph(exported / "video.onnx", ["CPUExecutionProvider"], 1, 1, ["pixel_values"], ["tokens"])
    (out,) = g(np.zeros((1, 16, 3, 224, 224), np.float32))
    assert out.shape == (1, 16, 64)
    with pytest.raises(ValueError, match="takes 1 inputs"):
        g(np.zeros(1), np.zeros(1))
    with pytest.raises(ArtifactError, match="the manifest says"):
        OrtGraph(exported / "video.onnx", ["CPUExecutionProvider"], 1, 1, ["images"], ["tokens"])
