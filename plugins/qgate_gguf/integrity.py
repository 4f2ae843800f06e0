"""One streaming pass over a GGUF file's tensors: NaN or infinite numbers, all-zero weights,
tensors stored short. The GGUF backend's :meth:`~qgate.backend.Backend.scan_tensors`.

A quantized block stores small integers and one or two float16 scales (``d``, and ``dmin`` or
``m`` for types with a minimum); its values are ``d * f(q) + m * g(q)``. So a block holds a
non-finite value exactly when one of its scales is non-finite, and is all zero when all of its
scales are zero: reading the scales (2-4 bytes of every 18-210) finds both without
dequantizing, at the speed of reading the file. Published quants have shipped with 61,440 NaN
block scales in one tensor (ik_llama.cpp issues 649 and 727). Float tensors are checked value by
value; a type whose scales are not laid out plainly (IQ1_M, MXFP4) is dequantized.

A tensor whose bytes run into the next tensor's is stored short of its shape: the header reader
already refuses one that runs past the end of the file.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from qgate.backend import TensorHealth
from qgate.errors import BackendError
from qgate.tensors import FLOAT_BITS
from qgate_gguf.reader import GGUFHeader, TensorInfo

#: bytes read at a time (whole blocks)
CHUNK_BYTES = 32 << 20

#: quantized type -> (block bytes, byte offsets of its float16 scales); from ggml-common.h
BLOCK_SCALES: dict[str, tuple[int, tuple[int, ...]]] = {
    "Q4_0": (18, (0,)),
    "Q4_1": (20, (0, 2)),
    "Q5_0": (22, (0,)),
    "Q5_1": (24, (0, 2)),
    "Q8_0": (34, (0,)),
    "Q2_K": (84, (80, 82)),
    "Q3_K": (110, (108,)),
    "Q4_K": (144, (0, 2)),
    "Q5_K": (176, (0, 2)),
    "Q6_K": (210, (208,)),
    "IQ2_XXS": (66, (0,)),
    "IQ2_XS": (74, (0,)),
    "IQ2_S": (82, (0,)),
    "IQ3_XXS": (98, (0,)),
    "IQ3_S": (110, (0,)),
    "IQ1_S": (50, (0,)),
    "IQ4_NL": (18, (0,)),
    "IQ4_XS": (136, (0,)),
    "TQ1_0": (54, (52,)),
    "TQ2_0": (66, (64,)),
}

INTEGER_TYPES = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}


def scan_gguf(path: Path, header: GGUFHeader) -> Iterator[TensorHealth]:
    """The health of every tensor of the GGUF file at ``path``, in file order."""
    from qgate_gguf.weights import GGUFWeights

    short = _overlaps(header)
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(path.open("rb"))
        except OSError as exc:
            raise BackendError(f"{path}: cannot read: {exc.strerror}") from None
        weights: GGUFWeights | None = None
        for info in header.tensors:
            if info.name in short:
                yield TensorHealth(info.name, info.shape, info.type_name, problem=short[info.name])
            elif _plain(info.type_name):
                yield tensor_health(handle, info)
            else:  # scales not laid out as plain float16 fields: every row dequantized
                if weights is None:
                    weights = stack.enter_context(GGUFWeights(path, header))
                yield weights.health(info.name)


def _plain(type_name: str) -> bool:
    return type_name in BLOCK_SCALES or type_name in FLOAT_BITS or type_name in INTEGER_TYPES


def tensor_health(handle: io.BufferedReader, info: TensorInfo) -> TensorHealth:
    """The health of a tensor of a plain type (:func:`_plain`), read from ``handle``."""
    if info.type_name in BLOCK_SCALES:
        block, offsets = BLOCK_SCALES[info.type_name]
        return _scan(handle, info, block, lambda raw: _scales(raw, block, offsets))
    storage = np.dtype(
        FLOAT_BITS[info.type_name][0]
        if info.type_name in FLOAT_BITS
        else INTEGER_TYPES[info.type_name]
    )
    return _scan(handle, info, storage.itemsize, lambda raw: raw.view(storage))


def _scan(
    handle: io.BufferedReader,
    info: TensorInfo,
    unit: int,
    numbers: Callable[[np.ndarray], np.ndarray],
) -> TensorHealth:
    """Read the tensor a chunk of whole units at a time; ``numbers(raw)`` picks what to check."""
    exponent, magnitude = _masks(info.type_name)
    step = max(unit, CHUNK_BYTES // unit * unit)
    count = non_finite = 0
    nonzero = False
    handle.seek(info.offset)
    for start in range(0, info.n_bytes, step):
        want = min(step, info.n_bytes - start)
        raw = np.frombuffer(handle.read(want), dtype=np.uint8)
        if raw.size != want:
            problem = f"the file ends {info.n_bytes - start - raw.size} bytes short of it"
            return TensorHealth(info.name, info.shape, info.type_name, problem=problem)
        values = numbers(raw)
        count += values.size
        if exponent:
            non_finite += int(np.count_nonzero((values & exponent) == exponent))
            nonzero = nonzero or bool(np.any(values & magnitude))
        else:
            nonzero = nonzero or bool(np.any(values))
    return TensorHealth(
        info.name, info.shape, info.type_name, count, non_finite, count > 0 and not nonzero
    )


def _masks(type_name: str) -> tuple[int, int]:
    """(exponent, magnitude) masks of the numbers checked: float16 scales for quantized types."""
    if type_name in FLOAT_BITS:
        return FLOAT_BITS[type_name][1], FLOAT_BITS[type_name][2]
    if type_name in BLOCK_SCALES:
        return FLOAT_BITS["F16"][1], FLOAT_BITS["F16"][2]
    return 0, 0


def _scales(raw: np.ndarray, block: int, offsets: tuple[int, ...]) -> np.ndarray:
    """The float16 scales of every block in ``raw``, as uint16 bit patterns."""
    blocks = raw.reshape(-1, block)
    return np.concatenate(
        [np.ascontiguousarray(blocks[:, o : o + 2]).view("<u2").ravel() for o in offsets]
    )


def _overlaps(header: GGUFHeader) -> dict[str, str]:
    """Tensors whose bytes run into the next tensor's: each is stored short of its shape."""
    ordered = sorted(header.tensors, key=lambda t: t.offset)
    found = {}
    for this, after in itertools.pairwise(ordered):
        if this.offset + this.n_bytes > after.offset:
            missing = this.offset + this.n_bytes - after.offset
            found[this.name] = (
                f"its shape {list(this.shape)} needs {this.n_bytes} bytes but tensor "
                f"{after.name!r} starts {after.offset - this.offset} bytes in: {missing} bytes short"
            )
    return found
