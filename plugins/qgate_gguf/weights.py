"""GGUF weights dequantized to float32, one tensor (or a block of rows) at a time.

A weight-level comparison of two models must never hold both in memory: a 70B model is 140 GB
in F16. :class:`GGUFWeights` reads the bytes of one tensor's rows at the absolute offsets from
:func:`~qgate_gguf.reader.read_gguf_header`, dequantizes them with ``gguf.quants.dequantize``
and lets them go. It reads rather than memory-maps: touching every 64th row of a mapped tensor
maps most of its pages (the kernel maps 64 KiB around each fault), and during a run that counts
both files a second time in resident memory, next to llama.cpp's own mapping.
:class:`GGUFWeights` is the GGUF backend's :class:`~qgate.backend.TensorReader`; the
format-free comparison lives in :mod:`qgate.tensors`.

Row ``r`` of a tensor is its ``r``-th run of ``shape[0]`` contiguous values (ggml order), so a
quant block never straddles two rows and any set of rows can be dequantized on its own.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from qgate.backend import TensorMeta, TensorReader
from qgate.errors import BackendError, MissingExtraError
from qgate.tensors import (
    DEFAULT_BLOCK_ELEMENTS,
    TensorComparison,
    check_rows,
    compare_tensors,
    read_row_bytes,
    sample_rows,
)
from qgate_gguf.reader import GGUFHeader, TensorInfo, read_gguf_header


def row_length(info: TensorInfo) -> int:
    """Values per row: the contiguous first dimension."""
    return int(info.shape[0])


def row_count(info: TensorInfo) -> int:
    """Rows of ``shape[0]`` values; 0 for a tensor with no values (GGUF allows a zero in any
    dimension, and ``shape[0] == 0`` divided by zero)."""
    return int(info.n_elements // info.shape[0]) if info.shape[0] else 0


class GGUFWeights(TensorReader):
    """An open GGUF file whose tensors can be read as float32, a few rows at a time: the GGUF
    backend's :class:`~qgate.backend.TensorReader`.

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
        self._infos: dict[str, TensorInfo] = {}
        for info in self.header.tensors:
            if info.name in self._infos:
                raise BackendError(f"{self.path}: tensor {info.name!r} appears twice")
            self._infos[info.name] = info
        self.tensors = [
            TensorMeta(info.name, info.shape, info.type_name, row_count(info), row_length(info))
            for info in self.header.tensors
        ]
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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise BackendError(f"{self.path}: no tensor {name!r}") from None

    def read_rows(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows of tensor ``name`` as float32 ``[len(rows), shape[0]]`` (all rows by default).

        :raises RowOutOfRange: for a row outside the tensor (an ``IndexError`` too).
        """
        info = self.info(name)
        gguf = self._gguf
        qtype = gguf.GGMLQuantizationType(info.type_id)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        length, n_rows = row_length(info), row_count(info)
        row_bytes = length // block_size * type_size
        rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        check_rows(rows, n_rows, name)
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
        what = f"{self.path}: tensor {info.name!r}"
        return read_row_bytes(self._file, info.offset, rows, row_bytes, what=what)

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
    weights = GGUFWeights(path)
    with weights:
        yield from weights.iter_tensors(max_elements=max_elements)


def compare_files(
    paths: Sequence[Path],
    *,
    max_elements: int | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    progress: Callable[[int, int], None] | None = None,
    headers: Sequence[GGUFHeader | None] | None = None,
) -> list[TensorComparison]:
    """:func:`qgate.tensors.compare_tensors` over GGUF files.

    Every file is opened (its header validated, bounds of every tensor included) before any
    tensor is read, so a truncated file fails first, with the file and tensor named.

    :param headers: the files' headers when the caller has read them already (a 262k-token
        vocabulary takes a second to walk).
    """
    if len(paths) < 2:
        raise ValueError("compare_files needs at least two files")
    known = list(headers) if headers is not None else [None] * len(paths)
    if len(known) != len(paths):
        raise ValueError("compare_files needs one header (or None) per file")
    with contextlib.ExitStack() as stack:
        readers = [
            stack.enter_context(GGUFWeights(path, header))
            for path, header in zip(paths, known, strict=True)
        ]
        return compare_tensors(
            readers,
            [Path(p) for p in paths],
            max_elements=max_elements,
            block_elements=block_elements,
            progress=progress,
        )
