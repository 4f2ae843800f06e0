"""The exl2 backend: ExLlamaV2 quants (``pip install 'qgate-llm[exl2]'``; scoring needs a CUDA GPU).

An EXL2 model is a Hugging Face folder whose linear layers are stored as ``.q_weight``,
``.q_scale``, ``.q_scale_max``, ``.q_groups`` and ``.q_invperm`` tensors, with
``quantization_config.quant_method == "exl2"`` in ``config.json`` (written by exllamav2's
converter). Metadata comes from the config and the safetensors headers, so ``qgate inspect``
and the static checks work on any machine; loading needs exllamav2 and a CUDA GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate_transformers.folder import (
    HFFolder,
    base_info,
    dense_info,
    first_weights_header,
    folder_quantization,
    read_folder,
)
from qgate_transformers.integrity import SafetensorsScan
from qgate_transformers.quantized import quantized_sizes

#: how sure the exl2 backend is of a folder whose config names no quantization but whose tensors
#: are EXL2's (older converters wrote no quantization_config): a marker, but not a statement
TENSOR_NAMES = 0.9

#: dtypes of an unquantized folder exllamav2 loads as it is
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32"})

#: tensors of one quantized EXL2 linear layer
EXL2_SUFFIXES = ("q_weight", "q_scale", "q_scale_max", "q_groups", "q_invperm", "q_perm", "bias")


def has_exl2_tensors(names: Iterable[str]) -> bool:
    names = list(names)
    return any(n.endswith(".q_weight") for n in names) and any(
        n.endswith((".q_groups", ".q_scale")) for n in names
    )


def exl2_info(folder: HFFolder) -> ModelInfo:
    """Bits per weight from the tensors: a quantized linear layer of ``in x out`` weights
    (``q_invperm`` has ``in`` entries, ``q_weight`` ``out`` columns) costs all its tensors' bytes."""

    def weights_of(prefix: str) -> int:
        q_weight = folder.tensors[f"{prefix}.q_weight"]
        perm = folder.tensors.get(f"{prefix}.q_invperm") or folder.tensors.get(f"{prefix}.q_perm")
        if perm is None or len(q_weight.shape) != 2:
            raise BackendError(
                f"{folder.path}: EXL2 layer {prefix!r} has no q_invperm/q_perm or a malformed "
                "q_weight: cannot tell its size"
            )
        return perm.n_elements * q_weight.shape[1]

    sizes = quantized_sizes(
        folder,
        marker="q_weight",
        suffixes=EXL2_SUFFIXES,
        weights_of=weights_of,
        type_of=lambda bits, n: f"EXL2_{bits / n:.1f}" if n else "EXL2",
    )
    qcfg = folder.quantization_config or {}
    target = qcfg.get("bits")
    info = base_info(
        folder,
        fmt="exl2",
        parameter_count=sizes.parameter_count,
        bits_per_weight=sizes.bits_per_weight,
        tensor_type_by_name=sizes.tensor_type_by_name,
        file_type=f"EXL2_{float(target):g}bpw" if isinstance(target, (int, float)) else "EXL2",
    )
    info.extra.update(
        {
            "exl2_target_bits": target,
            "exl2_head_bits": qcfg.get("head_bits"),
            "exl2_calibration": qcfg.get("calibration"),
            "exl2_version": qcfg.get("version"),
            "exl2_linear_bits_per_weight": sizes.linear_bits_per_weight,
            "exl2_quantized_layers": sizes.layers,
        }
    )
    return info


class EXL2Backend(SafetensorsScan, Backend):
    name = "exl2"
    description = (
        "EXL2 folders through exllamav2 (CUDA GPU only; KV cache f16/q8/q6/q4); "
        "inspect works anywhere"
    )
    extra = "exl2"

    def detect(self, path: Path) -> float:
        """Certain when config.json says exl2; :data:`TENSOR_NAMES` when it names no
        quantization and the weights hold EXL2 tensors; 0 otherwise."""
        method = folder_quantization(path)
        if method == "exl2":
            return 1.0
        if method != "":  # not a folder (None), or a config that names another method
            return 0.0
        header = first_weights_header(path)
        return TENSOR_NAMES if header is not None and has_exl2_tensors(header) else 0.0

    def inspect(self, path: Path) -> ModelInfo:
        folder = read_folder(path)
        method = folder.quant_method
        if method not in (None, "exl2") or not has_exl2_tensors(folder.tensors):
            raise BackendError(
                f"{path}: not an EXL2 model (no .q_weight/.q_groups tensors"
                + (f"; config.json says quant_method {method!r}" if method else "")
                + ")"
            )
        return exl2_info(folder)

    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        from qgate_exl2.model import EXL2Model

        return EXL2Model(self.inspect(path), options)

    def runs_full_precision(self, path: Path) -> bool:
        """exllamav2 also runs an unquantized Hugging Face folder (F16, BF16 or F32 weights),
        so an EXL2 quant's runtime floor is its FP16 reference through exllamav2."""
        if self.detect(path) > 0:
            return True
        if folder_quantization(path) != "":  # not a folder, or another format's quant
            return False
        header = first_weights_header(path)
        return header is not None and all(t.dtype in FLOAT_DTYPES for t in header.values())

    def load_full_precision(self, path: Path, options: BackendOptions) -> LoadedModel:
        from qgate_exl2.model import EXL2Model

        if self.detect(path) > 0:
            return self.load(path, options)
        return EXL2Model(dense_info(read_folder(path)), options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [EXL2Backend()]
