"""The exl2 backend: ExLlamaV2 quants (``pip install 'qgate[exl2]'``; scoring needs a CUDA GPU).

An EXL2 model is a Hugging Face folder whose linear layers are stored as ``.q_weight``,
``.q_scale``, ``.q_scale_max``, ``.q_groups`` and ``.q_invperm`` tensors, with
``quantization_config.quant_method == "exl2"`` in ``config.json`` (written by exllamav2's
converter). Metadata comes from the config and the safetensors headers, so ``qgate inspect``
and the static checks work on any machine; loading needs exllamav2 and a CUDA GPU.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate_hf.folder import (
    DTYPE_BITS,
    HFFolder,
    base_info,
    detected_quantization,
    read_folder,
    read_safetensors_header,
)

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
    modules: dict[str, dict[str, int]] = defaultdict(dict)
    for name in folder.tensors:
        prefix, _, suffix = name.rpartition(".")
        modules[prefix][suffix] = 1
    quantized = {p for p, parts in modules.items() if "q_weight" in parts}
    elements = 0
    bits = 0
    q_elements = 0
    q_bits = 0
    by_name: dict[str, str] = {}
    for prefix in quantized:
        q_weight = folder.tensors[f"{prefix}.q_weight"]
        perm = folder.tensors.get(f"{prefix}.q_invperm") or folder.tensors.get(f"{prefix}.q_perm")
        if perm is None or len(q_weight.shape) != 2:
            raise BackendError(
                f"{folder.path}: EXL2 layer {prefix!r} has no q_invperm/q_perm or a malformed "
                "q_weight: cannot tell its size"
            )
        n = perm.n_elements * q_weight.shape[1]
        module_bits = sum(
            folder.tensors[f"{prefix}.{s}"].n_bytes * 8
            for s in EXL2_SUFFIXES
            if f"{prefix}.{s}" in folder.tensors
        )
        q_elements += n
        q_bits += module_bits
        by_name[f"{prefix}.weight"] = f"EXL2_{module_bits / n:.1f}" if n else "EXL2"
    for tensor in folder.tensors.values():
        prefix, _, suffix = tensor.name.rpartition(".")
        if prefix in quantized and suffix in EXL2_SUFFIXES:
            continue
        elements += tensor.n_elements
        bits += tensor.n_elements * DTYPE_BITS[tensor.dtype]
        by_name[tensor.name] = tensor.dtype
    total = elements + q_elements
    qcfg = folder.quantization_config or {}
    target = qcfg.get("bits")
    info = base_info(
        folder,
        fmt="exl2",
        parameter_count=total,
        bits_per_weight=round((bits + q_bits) / total, 4) if total else None,
        tensor_type_by_name=by_name,
        file_type=f"EXL2_{float(target):g}bpw" if isinstance(target, (int, float)) else "EXL2",
    )
    info.extra.update(
        {
            "exl2_target_bits": target,
            "exl2_head_bits": qcfg.get("head_bits"),
            "exl2_calibration": qcfg.get("calibration"),
            "exl2_version": qcfg.get("version"),
            "exl2_linear_bits_per_weight": round(q_bits / q_elements, 4) if q_elements else None,
            "exl2_quantized_layers": len(quantized),
        }
    )
    return info


class EXL2Backend(Backend):
    name = "exl2"
    description = (
        "EXL2 folders through exllamav2 (CUDA GPU only; KV cache f16/q8/q6/q4); "
        "inspect works anywhere"
    )
    extra = "exl2"

    def detect(self, path: Path) -> bool:
        method = detected_quantization(path)
        if method != "":  # not a folder (None), or a config that names its method
            return method == "exl2"
        try:  # no quantization_config: EXL2 tensor names in the weights decide
            first = sorted(path.glob("*.safetensors"))[0]
            return has_exl2_tensors(read_safetensors_header(first))
        except (OSError, ValueError, BackendError, IndexError):
            return False

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

        return EXL2Model(path, self.inspect(path), options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [EXL2Backend()]
