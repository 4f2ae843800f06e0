"""Weights of several models compared tensor by tensor, whatever their format.

A backend hands out a model's weights as a :class:`~qgate.backend.TensorReader` (dequantized
float32 rows, read on request); this module only does the numerics on them. Comparing two 70B
models must never hold either in memory, so :func:`compare_tensors` reads each tensor at the
same sampled rows from every reader (:func:`sample_rows`: every k-th row, deterministic), a block
of rows at a time, and keeps only running sums (:class:`PairStats`) per pair of models.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qgate.backend import TensorMeta, TensorReader
from qgate.errors import BackendError

#: float storage types, as GGUF and safetensors both name them: (bit-pattern storage, exponent
#: mask: all ones means NaN or infinity, magnitude mask: none set means zero). Integrity scans
#: count non-finite and non-zero numbers on the bit patterns, without converting them.
FLOAT_BITS: dict[str, tuple[str, int, int]] = {
    "F16": ("<u2", 0x7C00, 0x7FFF),
    "BF16": ("<u2", 0x7F80, 0x7FFF),
    "F32": ("<u4", 0x7F800000, 0x7FFFFFFF),
    "F64": ("<u8", 0x7FF0000000000000, 0x7FFFFFFFFFFFFFFF),
}

#: values per model dequantized at once by :func:`compare_tensors` (4 MB of float32)
DEFAULT_BLOCK_ELEMENTS = 1 << 20


def sample_rows(n_rows: int, length: int, max_elements: int | None) -> np.ndarray:
    """Indices of the rows to read: all of them, or every k-th from row 0 so that at most
    ``max_elements`` values are read (but always at least one row). Deterministic: two tensors
    of the same shape are sampled at the same rows."""
    if max_elements is None or n_rows * length <= max_elements:
        return np.arange(n_rows, dtype=np.int64)
    keep = max(1, max_elements // max(length, 1))
    step = -(-n_rows // keep)
    return np.arange(0, n_rows, step, dtype=np.int64)


class RowOutOfRange(BackendError, IndexError):
    """A row index outside its tensor: a :class:`BackendError` as :class:`TensorReader`
    promises, and an ``IndexError``, as any index past the end is."""


def check_rows(rows: np.ndarray, n_rows: int, name: str) -> None:
    """Raise :class:`RowOutOfRange` unless every index of ``rows`` is in ``[0, n_rows)``."""
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        raise RowOutOfRange(f"{name}: rows must be in [0, {n_rows}), got {rows.min()}-{rows.max()}")


def read_row_bytes(
    handle: io.BufferedIOBase, offset: int, rows: np.ndarray, row_bytes: int, *, what: str
) -> np.ndarray:
    """The raw bytes of ``rows`` of a tensor stored row after row from ``offset`` in an open
    file, as uint8 ``[len(rows), row_bytes]``: one seek and read per run of consecutive rows
    (rows are read, not memory-mapped: a mapping faulted in around every sampled row would
    bring most of a large file into resident memory).

    :param what: the file and tensor, for the error when the file ends early.
    """
    out = np.empty((len(rows), row_bytes), dtype=np.uint8)
    if len(rows) == 0 or row_bytes == 0:
        return out
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for begin, end in zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)], strict=True):
        handle.seek(offset + int(rows[begin]) * row_bytes)
        if handle.readinto(out[begin:end].data.cast("B")) != (end - begin) * row_bytes:
            raise BackendError(f"{what}: the file ends inside the tensor's data")
    return out


@dataclass
class PairStats:
    """Sums over the compared values of two tensors ``a`` and ``b`` (in float64)."""

    dot: float = 0.0
    norm_a2: float = 0.0
    norm_b2: float = 0.0
    diff2: float = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        # einsum, not np.dot: BLAS threads spinning on a busy CI runner made dot 100x slower
        diff = a - b
        self.dot += float(np.einsum("i,i->", a, b))
        self.norm_a2 += float(np.einsum("i,i->", a, a))
        self.norm_b2 += float(np.einsum("i,i->", b, b))
        self.diff2 += float(np.einsum("i,i->", diff, diff))

    @property
    def rel_error(self) -> float:
        """``||a - b|| / ||b||`` (0 for two zero tensors, inf when only ``b`` is zero)."""
        if self.diff2 == 0.0:
            return 0.0
        if self.norm_b2 == 0.0:
            return math.inf
        return math.sqrt(self.diff2 / self.norm_b2)

    @property
    def cosine(self) -> float:
        """Cosine similarity (1 for two zero tensors, 0 when only one is zero)."""
        if self.norm_a2 == 0.0 and self.norm_b2 == 0.0:
            return 1.0
        if self.norm_a2 == 0.0 or self.norm_b2 == 0.0:
            return 0.0
        return max(-1.0, min(1.0, self.dot / math.sqrt(self.norm_a2 * self.norm_b2)))


@dataclass
class TensorComparison:
    """One tensor compared across models: statistics of every pair ``(i, j)``, ``i < j``."""

    name: str
    shape: tuple[int, ...]
    types: tuple[str, ...]  #: the tensor's storage type in each model
    elements: int  #: values compared per model (after row sampling)
    pairs: dict[tuple[int, int], PairStats] = field(default_factory=dict)

    def stats(self, i: int, j: int) -> PairStats:
        return self.pairs[(i, j) if i < j else (j, i)]

    def rel_error(self, i: int, j: int) -> float:
        """``||x_i - x_j|| / ||x_j||``: the error of model ``i`` relative to model ``j``."""
        if i < j:
            return self.pairs[(i, j)].rel_error
        s = self.pairs[(j, i)]
        return PairStats(s.dot, s.norm_b2, s.norm_a2, s.diff2).rel_error

    def cosine(self, i: int, j: int) -> float:
        return self.stats(i, j).cosine


def check_comparable(readers: Sequence[TensorReader], sources: Sequence[Path]) -> None:
    """Raise a :class:`BackendError` naming the model and tensor unless every reader has the
    first one's tensors (and no others), with the same shapes.

    :param sources: where each reader's weights come from, for the messages.
    """
    first = {meta.name: meta for meta in readers[0].tensors}
    for reader, source in zip(readers[1:], sources[1:], strict=True):
        theirs = {meta.name: meta for meta in reader.tensors}
        for name, meta in first.items():
            other = theirs.get(name)
            if other is None:
                raise BackendError(
                    f"{source}: no tensor {name!r} (it is in {sources[0].name}): a weight "
                    "comparison needs the same tensors in both files"
                )
            if other.shape != meta.shape:
                raise BackendError(
                    f"{source}: tensor {name!r} has shape {list(other.shape)}, but "
                    f"{sources[0].name} has {list(meta.shape)}: not the same model architecture"
                )
        extra = sorted(set(theirs) - set(first))
        if extra:
            raise BackendError(
                f"{source}: tensor {extra[0]!r} is not in {sources[0].name} "
                f"({len(extra)} extra tensors): a weight comparison needs the same tensors"
            )


def compare_tensors(
    readers: Sequence[TensorReader],
    sources: Sequence[Path],
    *,
    max_elements: int | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    progress: Callable[[int, int], None] | None = None,
) -> list[TensorComparison]:
    """Compare the same tensors of several models, pair by pair, streaming, in the first
    reader's tensor order.

    The readers are checked up front (:func:`check_comparable`): a missing tensor or a shape
    mismatch is a :class:`BackendError` before any tensor is read. Then each tensor is read at
    the same sampled rows from every reader, ``block_elements`` values at a time.

    :param sources: where each reader's weights come from, for error messages.
    :param max_elements: values to compare per tensor at most (every k-th row), None for all.
    :param progress: called with (tensors done, tensors in all) after each tensor.
    """
    if len(readers) < 2:
        raise ValueError("a weight comparison needs at least two models")
    if len(sources) != len(readers):
        raise ValueError("a weight comparison needs one source per reader")
    check_comparable(readers, sources)
    by_name = [{meta.name: meta for meta in reader.tensors} for reader in readers]
    names = [meta.name for meta in readers[0].tensors]
    out = []
    for done, name in enumerate(names, 1):
        metas = [index[name] for index in by_name]
        out.append(_compare_tensor(readers, metas, max_elements, block_elements))
        if progress is not None:
            progress(done, len(names))
    return out


def _compare_tensor(
    readers: Sequence[TensorReader],
    metas: Sequence[TensorMeta],
    max_elements: int | None,
    block_elements: int,
) -> TensorComparison:
    """One tensor (``metas``: as each reader lists it) compared across every pair of readers."""
    first = metas[0]
    rows = sample_rows(first.rows, first.row_length, max_elements)
    result = TensorComparison(
        name=first.name,
        shape=first.shape,
        types=tuple(meta.type_name for meta in metas),
        elements=len(rows) * first.row_length,
    )
    n = len(readers)
    for i in range(n):
        for j in range(i + 1, n):
            result.pairs[(i, j)] = PairStats()
    per_block = max(1, block_elements // max(first.row_length, 1))
    for begin in range(0, len(rows), per_block):
        block = rows[begin : begin + per_block]
        values = [r.read_rows(first.name, block).astype(np.float64).ravel() for r in readers]
        for (i, j), stats in result.pairs.items():
            stats.add(values[i], values[j])
    return result
