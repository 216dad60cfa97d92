"""TensorRT engine plumbing that needs no GPU: optimisation profiles, profile choice, cache keys, availability."""

from __future__ import annotations

import pytest

from export.onnx_export import audio_spec, video_spec
from export.tensorrt_build import (
    cache_key,
    engine_name,
    opt_batch,
    profiles,
    select_profile,
    unavailable_reason,
)

SR = 16000


def test_video_profile_spans_batch_1_to_max() -> None:
    (p,) = profiles(video_spec(16, 224, 2560, max_batch=8))
    assert p.shapes == {"pixel_values": ((1, 16, 3, 224, 224), (4, 16, 3, 224, 224), (8, 16, 3, 224, 224))}
    assert p.fits({"pixel_values": (8, 16, 3, 224, 224)})
    assert not p.fits({"pixel_values": (9, 16, 3, 224, 224)})
    assert not p.fits({"pixel_values": (1, 8, 3, 224, 224)})  # frames are static


def test_audio_profiles_are_contiguous_length_buckets() -> None:
    spec = audio_spec(2560, max_batch=8, max_samples=12 * SR)
    profs = profiles(spec, [2 * SR, 4 * SR, 8 * SR, 12 * SR])
    assert len(profs) == 4
    lo_hi = [(p.shapes["input_values"][0][1], p.shapes["input_values"][2][1]) for p in profs]
    assert lo_hi[0][0] == 800 and lo_hi[-1][1] == 12 * SR
    for (_, hi), (lo, _) in zip(lo_hi, lo_hi[1:], strict=False):
        assert lo == hi + 1  # no gap, no overlap
    for p in profs:  # mask and waveform share the profile; opt = the bucket (runtime pads up to it)
        assert p.shapes["input_values"] == p.shapes["attention_mask"]
        assert p.shapes["input_values"][1] == (opt_batch(8), p.shapes["input_values"][2][1])
    shapes = lambda b, t: {"input_values": (b, t), "attention_mask": (b, t)}  # noqa: E731
    assert select_profile(profs, shapes(1, 16000)) == 0
    assert select_profile(profs, shapes(3, 2 * SR + 1)) == 1
    assert select_profile(profs, shapes(8, 12 * SR)) == 3
    assert select_profile(profs, shapes(8, 12 * SR + 1)) == -1
    assert select_profile(profs, shapes(9, 16000)) == -1


def test_buckets_beyond_the_graph_are_clipped() -> None:
    profs = profiles(audio_spec(64, 4, 5 * SR), [2 * SR, 8 * SR, 12 * SR])
    assert [p.shapes["input_values"][2][1] for p in profs] == [2 * SR, 5 * SR]


def test_cache_key_changes_with_every_component() -> None:
    profs = profiles(video_spec(16, 224, 64, 8))
    base = ("NVIDIA H100 80GB HBM3", "10.9.0", "ab" * 32, "fp16", profs)
    key = cache_key(*base)
    assert key == cache_key(*base) and len(key) == 24
    variants = [
        ("NVIDIA H200", *base[1:]),
        (base[0], "10.10.0", *base[2:]),
        (*base[:2], "cd" * 32, *base[3:]),
        (*base[:3], "bf16", base[4]),
        (*base[:4], profiles(video_spec(16, 224, 64, 16))),
    ]
    assert len({cache_key(*v) for v in variants} | {key}) == 6
    assert engine_name("audio", "fp16", key) == f"tensorrt/audio.fp16.{key}.plan"


def test_tensorrt_is_reported_unavailable_here() -> None:
    """This machine has neither the tensorrt package nor a GPU; the reason says which."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        reason = unavailable_reason()
        assert reason is not None and "not installed" in reason
        return
    pytest.skip("tensorrt is installed here")


def test_precision_plan_follows_the_tensorrt_major_version() -> None:
    from export.tensorrt_build import precision_plan

    # TensorRT 10: the fp32 graph plus builder flags (INT8 calibrated with an FP16 fallback)
    assert precision_plan("fp32", "10.9.0").flags == ()
    assert precision_plan("fp16", "10.9.0") == precision_plan("fp16", "10.13.2")
    assert precision_plan("fp16", "10.9.0").flags == ("FP16",)
    assert precision_plan("bf16", "10.9.0").graph_dtype == "float32"
    assert precision_plan("int8", "10.9.0").flags == ("INT8", "FP16")
    # TensorRT 11 has no precision flags: the precision is the graph's dtype; implicit INT8 is gone
    p = precision_plan("bf16", "11.4.0")
    assert (p.graph_dtype, p.flags, p.error) == ("bfloat16", (), None)
    assert precision_plan("fp16", "11.4.0").graph_dtype == "float16"
    assert "Q/DQ" in (precision_plan("int8", "11.4.0").error or "")
    assert precision_plan("fp64", "10.9.0").error


def test_graph_digest_covers_external_weights() -> None:
    from export.tensorrt_build import graph_digest

    a = {"video.onnx": "1" * 64, "video.onnx.data": "2" * 64}
    assert graph_digest(a) == graph_digest(dict(reversed(a.items())))
    assert graph_digest(a) != graph_digest({**a, "video.onnx.data": "3" * 64})


def test_typed_fp16_graph_exports_for_tensorrt_11(tmp_path, torch_front_ends) -> None:
    """The reduced-precision graph TensorRT 11 builds from: exported here on CPU, float16 in and out."""
    import copy

    import onnx
    import torch

    from export.onnx_export import export_onnx

    spec = video_spec(16, 224, 64, max_batch=8)
    typed = copy.deepcopy(torch_front_ends.video).to(torch.float16)
    g = export_onnx(typed, spec, tmp_path / "tensorrt", 18, stem="video.fp16", dtype=torch.float16)
    assert g.file == "video.fp16.onnx" and set(g.files) <= {"video.fp16.onnx", "video.fp16.onnx.data"}
    model = onnx.load(str(tmp_path / "tensorrt" / g.file), load_external_data=False)
    f16 = onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == f16
    assert model.graph.output[0].type.tensor_type.elem_type == f16
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
