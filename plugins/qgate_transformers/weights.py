"""The float weights of a Hugging Face folder, read tensor by tensor: a :class:`TensorReader`.

Only F32, F16 and BF16 tensors are handed out: a quantized folder's packed integers mean
nothing without its format's dequantizer, so :func:`float_tensor_reader` returns None for it.
A row is a run of the last (contiguous) dimension, as safetensors stores tensors row-major.
Rows are read from the file, not memory-mapped (:func:`qgate.tensors.read_row_bytes` says why).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import TensorMeta, TensorReader
from qgate.errors import BackendError
from qgate.tensors import check_rows, read_row_bytes
from qgate_transformers.folder import HFFolder
from qgate_transformers.safetensors_header import TensorEntry

#: safetensors dtypes handed out, with how their bytes are stored (little-endian)
_FLOAT_STORAGE: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}


def float_tensor_reader(folder: HFFolder) -> SafetensorsTensorReader | None:
    """A reader of the folder's tensors, or None when the folder is quantized (a
    ``quantization_config``, or any tensor that is not F32, F16 or BF16)."""
    if folder.quant_method is not None:
        return None
    if any(t.dtype not in _FLOAT_STORAGE for t in folder.tensors.values()):
        return None
    return SafetensorsTensorReader(folder)


def _rows(entry: TensorEntry) -> tuple[int, int]:
    """(rows, values per row): the last dimension is the row; a scalar is one row of one."""
    if not entry.shape:
        return 1, 1
    length = entry.shape[-1]
    return (math.prod(entry.shape[:-1]) if length else 0), length


class SafetensorsTensorReader(TensorReader):
    """Float tensors of a folder's safetensors files, in file order, read as float32 rows."""

    def __init__(self, folder: HFFolder):
        self.path = folder.path
        ordered = sorted(folder.tensors.values(), key=lambda t: (str(t.file), t.offset))
        self._entries = {t.name: t for t in ordered}
        self.tensors = [
            TensorMeta(t.name, t.shape, t.dtype, *_rows(t)) for t in self._entries.values()
        ]
        self._files: dict[Path, io.BufferedIOBase] = {}

    def _file(self, entry: TensorEntry) -> io.BufferedIOBase:
        if entry.file is None:
            raise BackendError(f"{self.path}: tensor {entry.name!r} has no file")
        handle = self._files.get(entry.file)
        if handle is None:
            try:
                handle = self._files[entry.file] = entry.file.open("rb")
            except OSError as exc:
                raise BackendError(f"{entry.file}: cannot read: {exc.strerror}") from None
        return handle

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        entry = self._entries.get(name)
        if entry is None:
            raise BackendError(f"{self.path}: no tensor {name!r}")
        n_rows, length = _rows(entry)
        rows = np.asarray(rows, dtype=np.int64)
        check_rows(rows, n_rows, f"{self.path}: {name}")
        storage = _FLOAT_STORAGE[entry.dtype]
        row_bytes = length * storage.itemsize
        what = f"{entry.file}: tensor {name!r}"
        raw = read_row_bytes(self._file(entry), entry.offset, rows, row_bytes, what=what)
        values = raw.view(storage).reshape(len(rows), length)
        if entry.dtype == "BF16":  # the upper half of a float32
            return (values.astype(np.uint32) << 16).view(np.float32)
        return values.astype(np.float32)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
