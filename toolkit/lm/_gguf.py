"""What a GGUF file says about itself, read from its header (no weights loaded, no llama.cpp).

``read_header(path)`` returns the scalar metadata (architecture, context length, chat template,
file type, ...) and each tensor's name, shape and ggml type: what :mod:`toolkit.lm._exactness`
needs to decide whether the exact parallel layout holds for a model, and what ``models list``
shows. Arrays (the vocabulary) are skipped, their lengths kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# ggml_type (ggml/include/ggml.h of llama.cpp as vendored by llama-cpp-python 0.3.36)
GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
    27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4",
    41: "Q1_0", 42: "Q2_0",
}
# llama_ftype (include/llama.h): the file's quantisation as llama.cpp's quantize names it
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """Not a GGUF file, or one this reader cannot parse."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: str  # a ggml type name (Q4_K, F16, ...), or "type N" for one this reader does not know


@dataclass(frozen=True)
class Header:
    """A GGUF file's metadata (arrays as their lengths) and tensors."""

    metadata: dict[str, Any]
    tensors: tuple[Tensor, ...] = field(repr=False)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch(self, key: str, default: Any = None) -> Any:
        """``{architecture}.{key}`` from the metadata."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def context_length(self) -> int | None:
        value = self.arch("context_length")
        return int(value) if value else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def file_type(self) -> str:
        """The quantisation (``Q4_K_M``...), from ``general.file_type``, else the commonest matrix type."""
        if (code := self.metadata.get("general.file_type")) is not None and code in FILE_TYPES:
            return FILE_TYPES[code]
        types = [t.type for t in self.tensors if len(t.shape) > 1]
        return max(set(types), key=types.count) if types else "unknown"

    def matrix_types(self) -> dict[str, int]:
        """How many weight matrices (tensors of two or more dimensions) of each ggml type."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) > 1:
                counts[t.type] = counts.get(t.type, 0) + 1
        return counts


def read_header(path: str | Path) -> Header:
    """The header of the GGUF file at ``path`` (versions 2 and 3)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file (no GGUF magic number)")
        version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        metadata = {}
        for _ in range(n_kv):
            key = _string(f)
            metadata[key] = _value(f, struct.unpack("<I", _read(f, 4))[0])
        tensors = []
        for _ in range(n_tensors):
            name = _string(f)
            (n_dims,) = struct.unpack("<I", _read(f, 4))
            shape = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
            code, _offset = struct.unpack("<IQ", _read(f, 12))
            tensors.append(Tensor(name, tuple(shape), GGML_TYPES.get(code, f"type {code}")))
    return Header(metadata, tuple(tensors))


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError(f"{getattr(f, 'name', 'file')}: truncated GGUF header")
    return data


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(f)
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _ARRAY:
        item, n = struct.unpack("<IQ", _read(f, 12))
        if item in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[item]) * n, 1)
        else:
            for _ in range(n):
                _value(f, item)
        return f"[{n} items]"
    raise GGUFError(f"{getattr(f, 'name', 'file')}: unknown GGUF value type {kind}")
