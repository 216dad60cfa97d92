"""Token-embedding rows straight from a GGUF file, for soft-token prompts on llama.cpp.

llama.cpp has no API for its input-embedding table, and `gguf.GGUFReader` parses every metadata field (the
49k-entry vocab and merges: seconds per load), so this reads only the header offsets it needs and dequantizes
just the requested rows of `token_embd.weight` from a memory map.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from engines.errors import ModelError

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFEmbeddings:
    def __init__(self, path: Path, tensor: str = "token_embd.weight") -> None:
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        mv = memoryview(self.buf)
        if bytes(mv[:4]) != b"GGUF":
            raise ModelError(f"{Path(path).name} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", mv, 4)
        if version < 2:
            raise ModelError(f"GGUF version {version} is too old")
        self._mv, self._pos = mv, 24
        alignment = 32
        for _ in range(n_kv):
            key = self._str()
            vtype = self._u32()
            if key == "general.alignment" and vtype == 4:
                alignment = self._u32()
            else:
                self._skip(vtype)
        info = None
        for _ in range(n_tensors):
            name = self._str()
            n_dims = self._u32()
            dims = struct.unpack_from(f"<{n_dims}Q", mv, self._pos)
            self._pos += 8 * n_dims
            qtype, offset = struct.unpack_from("<IQ", mv, self._pos)
            self._pos += 12
            if name == tensor:
                info = (dims, qtype, offset)
        if info is None:
            raise ModelError(f"this GGUF file has no {tensor} tensor")
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        dims, qtype, offset = info
        self.qtype = GGMLQuantizationType(qtype)
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        self.hidden, self.rows = int(dims[0]), int(dims[1])
        self.row_bytes = self.hidden // block * type_size
        start = -(-self._pos // alignment) * alignment + offset
        self.data = self.buf[start : start + self.rows * self.row_bytes].reshape(self.rows, self.row_bytes)
        del self._mv

    def _u32(self) -> int:
        (v,) = struct.unpack_from("<I", self._mv, self._pos)
        self._pos += 4
        return v

    def _str(self) -> str:
        (n,) = struct.unpack_from("<Q", self._mv, self._pos)
        s = bytes(self._mv[self._pos + 8 : self._pos + 8 + n]).decode("utf-8", errors="replace")
        self._pos += 8 + n
        return s

    def _skip(self, vtype: int) -> None:
        if vtype in _SCALAR:
            self._pos += struct.calcsize(_SCALAR[vtype])
        elif vtype == _STRING:
            (n,) = struct.unpack_from("<Q", self._mv, self._pos)
            self._pos += 8 + n
        elif vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", self._mv, self._pos)
            self._pos += 12
            if etype in _SCALAR:
                self._pos += count * struct.calcsize(_SCALAR[etype])
            else:
                for _ in range(count):
                    self._skip(etype)
        else:
            raise ModelError(f"unknown GGUF metadata type {vtype}")

    def rows_f32(self, ids: np.ndarray) -> np.ndarray:
        from gguf.quants import dequantize

        out = dequantize(np.asarray(self.data[ids]), self.qtype)
        return np.asarray(out, dtype=np.float32).reshape(len(ids), self.hidden)
