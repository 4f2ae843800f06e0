"""The size of a folder whose linear layers are stored quantized, several tensors per layer.

EXL2 stores a linear layer ``prefix`` as ``prefix.q_weight``, ``prefix.q_scale``, ...; AWQ as
``prefix.qweight``, ``prefix.qzeros``, ``prefix.scales``. Each backend knows its own tensor names
and how many weights a layer holds; the accounting is the same: a quantized layer costs every
byte of its tensors, every other tensor counts at its dtype's width.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from qgate_transformers.folder import HFFolder
from qgate_transformers.safetensors_header import DTYPE_BITS


@dataclass
class QuantizedSizes:
    """Weights and stored bits of a folder, its quantized linear layers apart."""

    #: tensor name -> type name; a quantized layer appears once, as ``prefix.weight``
    tensor_type_by_name: dict[str, str] = field(default_factory=dict)
    dense_weights: int = 0
    dense_bits: int = 0
    linear_weights: int = 0  #: the quantized layers' weights, unpacked
    linear_bits: int = 0  #: every bit of the quantized layers' tensors
    layers: int = 0  #: quantized linear layers

    @property
    def parameter_count(self) -> int:
        return self.dense_weights + self.linear_weights

    @property
    def bits_per_weight(self) -> float | None:
        total = self.parameter_count
        return round((self.dense_bits + self.linear_bits) / total, 4) if total else None

    @property
    def linear_bits_per_weight(self) -> float | None:
        weights = self.linear_weights
        return round(self.linear_bits / weights, 4) if weights else None


def quantized_sizes(
    folder: HFFolder,
    *,
    marker: str,
    suffixes: tuple[str, ...],
    weights_of: Callable[[str], int],
    type_of: Callable[[int, int], str],
) -> QuantizedSizes:
    """Count a folder's weights and bits.

    :param marker: the tensor suffix that makes ``prefix`` a quantized layer (``q_weight``).
    :param suffixes: every suffix of a quantized layer's tensors.
    :param weights_of: the number of weights the quantized layer ``prefix`` holds.
    :param type_of: the type name of a layer of (stored bits, weights).
    """
    parts: defaultdict[str, set[str]] = defaultdict(set)
    for name in folder.tensors:
        prefix, _, suffix = name.rpartition(".")
        parts[prefix].add(suffix)
    quantized = sorted(p for p, found in parts.items() if marker in found)
    sizes = QuantizedSizes(layers=len(quantized))
    for prefix in quantized:
        weights = weights_of(prefix)
        stored = sum(
            folder.tensors[f"{prefix}.{s}"].n_bytes * 8
            for s in suffixes
            if f"{prefix}.{s}" in folder.tensors
        )
        sizes.linear_weights += weights
        sizes.linear_bits += stored
        sizes.tensor_type_by_name[f"{prefix}.weight"] = type_of(stored, weights)
    layer_set = set(quantized)
    for tensor in folder.tensors.values():
        prefix, _, suffix = tensor.name.rpartition(".")
        if prefix in layer_set and suffix in suffixes:
            continue
        sizes.dense_weights += tensor.n_elements
        sizes.dense_bits += tensor.n_elements * DTYPE_BITS[tensor.dtype]
        sizes.tensor_type_by_name[tensor.name] = tensor.dtype
    return sizes
