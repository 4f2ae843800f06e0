"""The JSON header of a ``*.safetensors`` file: every tensor's dtype, shape and byte range.

The format is an 8-byte little-endian header length, that many bytes of JSON naming each
tensor's ``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the
data. The header alone describes a model; every entry is checked against the file's size so a
truncated or hostile file is refused here, not halfway through a read.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgate.errors import BackendError
from qgate_transformers.jsonfile import replace_surrogates, shown

#: bits per element of each safetensors dtype
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
}

_MAX_HEADER = 100 << 20  # a safetensors header over 100 MiB is corrupt, not big


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int
    file: Path | None = None  #: the safetensors file that holds the data
    offset: int = 0  #: absolute offset of the data in ``file``

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def read_safetensors_header(file: Path) -> dict[str, TensorEntry]:
    """Every tensor of one safetensors file: dtype, shape and size, from the header alone."""
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise BackendError(f"{file}: truncated: no safetensors header")
            (length,) = struct.unpack("<Q", raw)
            if length > min(_MAX_HEADER, size - 8):
                raise BackendError(
                    f"{file}: header length {length} is impossible in a file of {size} bytes "
                    "(truncated or not a safetensors file)"
                )
            text = handle.read(length)
    except OSError as exc:
        raise BackendError(f"{file}: cannot read: {exc}") from None
    try:
        header = replace_surrogates(json.loads(text.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BackendError(f"{file}: corrupt safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise BackendError(f"{file}: corrupt safetensors header: not a JSON object")
    data_start = 8 + length
    tensors: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if name != "__metadata__":
            tensors[name] = _entry(file, name, entry, data_start, size - data_start)
    return tensors


def _entry(file: Path, name: str, entry: Any, data_start: int, data_size: int) -> TensorEntry:
    """One checked header entry: a known dtype whose shape fills its byte range exactly."""
    try:
        dtype = str(entry["dtype"])
        shape = tuple(_header_int(d) for d in entry["shape"])
        begin, end = (_header_int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise BackendError(f"{file}: corrupt safetensors header entry for {name!r}") from None
    if dtype not in DTYPE_BITS:
        raise BackendError(f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
    tensor = TensorEntry(name, dtype, shape, end - begin, file, data_start + begin)
    if (
        not 0 <= begin <= end <= data_size
        or tensor.n_elements * DTYPE_BITS[dtype] // 8 != end - begin
    ):
        raise BackendError(
            f"{file}: tensor {name!r} ({dtype} {list(shape)}) does not fit its byte range "
            f"[{begin}, {end}) of {data_size} data bytes (truncated or corrupt)"
        )
    return tensor


def _header_int(value: Any) -> int:
    """A dimension or offset of a safetensors header: a non-negative JSON integer, nothing else
    (``int()`` would take ``"12"``, truncate ``2.5``, overflow on ``1e999``, and a pair of
    negative dimensions would multiply to a plausible size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a non-negative integer: {shown(value)}")
    return value
