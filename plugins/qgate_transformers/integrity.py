"""One streaming pass over a folder's ``*.safetensors`` tensors: NaN or infinite numbers,
all-zero float tensors, tensors stored short. The folder backends' (hf, exl2, awq)
:meth:`~qgate.backend.Backend.scan_tensors`.

Float tensors (a full-precision model's weights; a quantized folder's scales, norms and
embeddings) are checked value by value through their bit patterns, without converting them.
Integer tensors (EXL2's ``q_weight``/``q_groups``, AWQ's ``qweight``/``qzeros``) hold packed
codes that no single value of which can be wrong, so only their length is checked; a NaN scale
beside them is what poisons a block, and that is a float tensor. The header reader already refuses
a tensor whose byte range does not fit its shape or runs past the end of its file; this pass also
catches two tensors whose byte ranges overlap (one of them is stored short).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qgate.backend import TensorHealth
from qgate.errors import BackendError
from qgate.tensors import FLOAT_BITS
from qgate_transformers.folder import HFFolder, read_folder
from qgate_transformers.safetensors_header import TensorEntry

#: bytes read at a time
CHUNK_BYTES = 32 << 20


def scan_safetensors(folder: HFFolder) -> Iterator[TensorHealth]:
    """The health of every tensor of ``folder``, file by file, in storage order."""
    ordered = sorted(folder.tensors.values(), key=lambda t: (str(t.file), t.offset))
    short = _overlaps(ordered)
    for file, entries in itertools.groupby(ordered, key=lambda t: t.file):
        if file is None:  # the header reader sets a file for every entry it returns
            raise BackendError(f"{folder.path}: a tensor without a file")
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise BackendError(f"{file}: cannot read: {exc.strerror}") from None
        with handle:
            for entry in entries:
                if entry.name in short:
                    yield _health(entry, problem=short[entry.name])
                else:
                    yield _tensor_health(handle, entry, file)


def _health(
    entry: TensorEntry,
    values: int = 0,
    non_finite: int = 0,
    all_zero: bool = False,
    problem: str = "",
) -> TensorHealth:
    return TensorHealth(entry.name, entry.shape, entry.dtype, values, non_finite, all_zero, problem)


def _tensor_health(handle: io.BufferedReader, entry: TensorEntry, file: Path) -> TensorHealth:
    """Read one tensor a chunk at a time: float bit patterns checked, other dtypes only read."""
    bits = FLOAT_BITS.get(entry.dtype)
    storage = np.dtype(bits[0]) if bits else np.dtype(np.uint8)
    step = max(storage.itemsize, CHUNK_BYTES // storage.itemsize * storage.itemsize)
    count = non_finite = 0
    nonzero = False
    handle.seek(entry.offset)
    for start in range(0, entry.n_bytes, step):
        want = min(step, entry.n_bytes - start)
        raw = handle.read(want)
        if len(raw) != want:
            missing = entry.n_bytes - start - len(raw)
            return _health(entry, problem=f"{file.name} ends {missing} bytes short of it")
        if bits is None:
            continue
        values = np.frombuffer(raw, dtype=storage)
        count += values.size
        non_finite += int(np.count_nonzero((values & bits[1]) == bits[1]))
        nonzero = nonzero or bool(np.any(values & bits[2]))
    return _health(entry, values=count, non_finite=non_finite, all_zero=count > 0 and not nonzero)


def _overlaps(ordered: list[TensorEntry]) -> dict[str, str]:
    """Tensors whose bytes run into the next tensor's in the same file."""
    found = {}
    for this, after in itertools.pairwise(ordered):
        if this.file == after.file and this.offset + this.n_bytes > after.offset:
            missing = this.offset + this.n_bytes - after.offset
            found[this.name] = (
                f"its shape {list(this.shape)} needs {this.n_bytes} bytes but tensor "
                f"{after.name!r} starts {after.offset - this.offset} bytes in: {missing} bytes short"
            )
    return found


class SafetensorsScan:
    """Mixin for the folder backends: :meth:`~qgate.backend.Backend.scan_tensors` by
    :func:`scan_safetensors`, whatever the folder's quantization."""

    def scan_tensors(self, path: Path) -> Iterator[TensorHealth]:
        return scan_safetensors(read_folder(path))
