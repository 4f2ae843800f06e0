"""GGUF weights dequantized to float32, one tensor (or a block of rows) at a time.

A weight-level comparison of two models must never hold both in memory: a 70B model is 140 GB
in F16. :class:`GGUFWeights` reads the bytes of one tensor's rows at the absolute offsets from
:func:`~qgate_gguf.reader.read_gguf_header`, dequantizes them with ``gguf.quants.dequantize``
and lets them go. It reads rather than memory-maps: touching every 64th row of a mapped tensor
maps most of its pages (the kernel maps 64 KiB around each fault), and during a run that counts
both files a second time in resident memory, next to llama.cpp's own mapping. Row sampling
(every k-th row, deterministic, the same rows in every file of the same shape) bounds the time
on large tensors, and :func:`compare_files` streams blocks of rows so even an unsampled
comparison holds only ``block_elements`` values per file at once.

Row ``r`` of a tensor is its ``r``-th run of ``shape[0]`` contiguous values (ggml order), so a
quant block never straddles two rows and any set of rows can be dequantized on its own.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from qgate.errors import BackendError, MissingExtraError
from qgate_gguf.reader import GGUFHeader, TensorInfo, read_gguf_header

#: values per file dequantized at once by :func:`compare_files` (4 MB of float32)
DEFAULT_BLOCK_ELEMENTS = 1 << 20


def row_length(info: TensorInfo) -> int:
    """Values per row: the contiguous first dimension."""
    return int(info.shape[0])


def row_count(info: TensorInfo) -> int:
    """Rows of ``shape[0]`` values; 0 for a tensor with no values (GGUF allows a zero in any
    dimension, and ``shape[0] == 0`` divided by zero)."""
    return int(info.n_elements // info.shape[0]) if info.shape[0] else 0


def sample_rows(n_rows: int, length: int, max_elements: int | None) -> np.ndarray:
    """Indices of the rows to read: all of them, or every k-th from row 0 so that at most
    ``max_elements`` values are read (but always at least one row). Deterministic: two tensors
    of the same shape are sampled at the same rows."""
    if max_elements is None or n_rows * length <= max_elements:
        return np.arange(n_rows, dtype=np.int64)
    keep = max(1, max_elements // max(length, 1))
    step = -(-n_rows // keep)
    return np.arange(0, n_rows, step, dtype=np.int64)


class GGUFWeights:
    """An open GGUF file whose tensors can be read as float32, a few rows at a time.

    Use it as a context manager; the header is validated (bounds of every tensor included)
    before anything is read, so a truncated file fails here with the file and tensor named.
    """

    def __init__(self, path: Path, header: GGUFHeader | None = None):
        try:
            import gguf
        except ImportError:
            raise MissingExtraError("gguf", "gguf", "gguf") from None
        self._gguf = gguf
        self.path = Path(path)
        self.header = header if header is not None else read_gguf_header(self.path)
        self.tensors: dict[str, TensorInfo] = {}
        for info in self.header.tensors:
            if info.name in self.tensors:
                raise BackendError(f"{self.path}: tensor {info.name!r} appears twice")
            self.tensors[info.name] = info
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise BackendError(f"{self.path}: cannot read: {exc.strerror}") from None
        if size != self.header.file_size:
            raise BackendError(
                f"{self.path}: the file changed while it was read "
                f"({self.header.file_size} bytes, now {size})"
            )
        try:
            self._file: io.BufferedReader | None = self.path.open("rb")
        except OSError as exc:
            raise BackendError(f"{self.path}: cannot read: {exc.strerror}") from None

    def __enter__(self) -> GGUFWeights:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise BackendError(f"{self.path}: no tensor {name!r}") from None

    def read_rows(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows of tensor ``name`` as float32 ``[len(rows), shape[0]]`` (all rows by default)."""
        info = self.info(name)
        gguf = self._gguf
        qtype = gguf.GGMLQuantizationType(info.type_id)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        length, n_rows = row_length(info), row_count(info)
        row_bytes = length // block_size * type_size
        rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise IndexError(
                f"{name}: rows must be in [0, {n_rows}), got {rows.min()}-{rows.max()}"
            )
        selected = self._read(info, rows, row_bytes)
        try:
            values = gguf.quants.dequantize(selected, qtype)
        except (NotImplementedError, ValueError, TypeError) as exc:
            raise BackendError(
                f"{self.path}: tensor {name!r}: cannot dequantize type {info.type_name}: {exc}"
            ) from None
        return np.asarray(values, dtype=np.float32).reshape(selected.shape[0], length)

    def _read(self, info: TensorInfo, rows: np.ndarray, row_bytes: int) -> np.ndarray:
        """The raw bytes of ``rows``, one read per run of consecutive rows."""
        if self._file is None:
            raise BackendError(f"{self.path}: the file is closed")
        out = np.empty((len(rows), row_bytes), dtype=np.uint8)
        if len(rows) == 0:
            return out
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for begin, end in zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)], strict=True):
            self._file.seek(info.offset + int(rows[begin]) * row_bytes)
            want = (end - begin) * row_bytes
            if self._file.readinto(out[begin:end].data.cast("B")) != want:
                raise BackendError(
                    f"{self.path}: tensor {info.name!r}: the file ends inside the tensor's data"
                )
        return out

    def iter_tensors(
        self, *, max_elements: int | None = None
    ) -> Iterator[tuple[TensorInfo, np.ndarray, np.ndarray]]:
        """``(info, rows, values)`` for each tensor in file order, ``values`` float32
        ``[len(rows), shape[0]]``. Without ``max_elements`` a whole tensor is in memory at once."""
        for info in self.header.tensors:
            rows = sample_rows(row_count(info), row_length(info), max_elements)
            yield info, rows, self.read_rows(info.name, rows)


def iter_tensors(
    path: Path, *, max_elements: int | None = None
) -> Iterator[tuple[TensorInfo, np.ndarray, np.ndarray]]:
    """Every tensor of the GGUF file at ``path`` as float32 (see :meth:`GGUFWeights.iter_tensors`)."""
    with GGUFWeights(path) as weights:
        yield from weights.iter_tensors(max_elements=max_elements)


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
    """One tensor compared across files: statistics of every pair ``(i, j)``, ``i < j``."""

    name: str
    shape: tuple[int, ...]
    types: tuple[str, ...]  #: the tensor's type in each file
    elements: int  #: values compared per file (after row sampling)
    pairs: dict[tuple[int, int], PairStats] = field(default_factory=dict)

    def stats(self, i: int, j: int) -> PairStats:
        return self.pairs[(i, j) if i < j else (j, i)]

    def rel_error(self, i: int, j: int) -> float:
        """``||x_i - x_j|| / ||x_j||``: the error of file ``i`` relative to file ``j``."""
        if i < j:
            return self.pairs[(i, j)].rel_error
        s = self.pairs[(j, i)]
        return PairStats(s.dot, s.norm_b2, s.norm_a2, s.diff2).rel_error

    def cosine(self, i: int, j: int) -> float:
        return self.stats(i, j).cosine


def check_comparable(files: Sequence[GGUFWeights]) -> None:
    """Raise a :class:`BackendError` naming the file and tensor unless every file has the first
    file's tensors, with the same shapes."""
    first = files[0]
    for other in files[1:]:
        for name, info in first.tensors.items():
            theirs = other.tensors.get(name)
            if theirs is None:
                raise BackendError(
                    f"{other.path}: no tensor {name!r} (it is in {first.path.name}): a weight "
                    "comparison needs the same tensors in both files"
                )
            if theirs.shape != info.shape:
                raise BackendError(
                    f"{other.path}: tensor {name!r} has shape {list(theirs.shape)}, but "
                    f"{first.path.name} has {list(info.shape)}: not the same model architecture"
                )
        extra = sorted(set(other.tensors) - set(first.tensors))
        if extra:
            raise BackendError(
                f"{other.path}: tensor {extra[0]!r} is not in {first.path.name} "
                f"({len(extra)} extra tensors): a weight comparison needs the same tensors"
            )


def compare_files(
    paths: Sequence[Path],
    *,
    max_elements: int | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    progress: Callable[[int, int], None] | None = None,
    headers: Sequence[GGUFHeader | None] | None = None,
) -> list[TensorComparison]:
    """Compare the same tensors of several GGUF files, pair by pair, streaming.

    Files are checked up front (:func:`check_comparable`): a missing tensor, a shape mismatch
    or a truncated file is a :class:`BackendError` before any tensor is read. Then each tensor
    is read at the same sampled rows from every file, ``block_elements`` values at a time.

    :param max_elements: values to compare per tensor at most (every k-th row), None for all.
    :param progress: called with (tensors done, tensors in all) after each tensor.
    :param headers: the files' headers when the caller has read them already (a 262k-token
        vocabulary takes a second to walk).
    """
    if len(paths) < 2:
        raise ValueError("compare_files needs at least two files")
    known = list(headers) if headers is not None else [None] * len(paths)
    if len(known) != len(paths):
        raise ValueError("compare_files needs one header (or None) per file")
    files: list[GGUFWeights] = []
    try:
        for path, header in zip(paths, known, strict=True):
            files.append(GGUFWeights(path, header))
        check_comparable(files)
        out = []
        infos = files[0].header.tensors
        for done, info in enumerate(infos, 1):
            out.append(_compare_tensor(files, info, max_elements, block_elements))
            if progress is not None:
                progress(done, len(infos))
        return out
    finally:
        for weights in files:
            weights.close()


def _compare_tensor(
    files: Sequence[GGUFWeights],
    info: TensorInfo,
    max_elements: int | None,
    block_elements: int,
) -> TensorComparison:
    length = row_length(info)
    rows = sample_rows(row_count(info), length, max_elements)
    result = TensorComparison(
        name=info.name,
        shape=info.shape,
        types=tuple(f.tensors[info.name].type_name for f in files),
        elements=len(rows) * length,
    )
    n = len(files)
    for i in range(n):
        for j in range(i + 1, n):
            result.pairs[(i, j)] = PairStats()
    per_block = max(1, block_elements // max(length, 1))
    for begin in range(0, len(rows), per_block):
        block = rows[begin : begin + per_block]
        values = [f.read_rows(info.name, block).astype(np.float64).ravel() for f in files]
        for (i, j), stats in result.pairs.items():
            stats.add(values[i], values[j])
    return result
