"""The awq backend: AutoAWQ-format checkpoints through transformers (``pip install 'qgate[awq]'``).

An AWQ model is a Hugging Face folder whose ``config.json`` has ``quantization_config`` with
``quant_method: awq`` (``bits``, ``group_size``, ``version`` gemm/gemv) and whose linear layers
are stored as ``.qweight`` / ``.qzeros`` / ``.scales``. transformers loads it with gptqmodel's
kernels; scoring and generation are the hf backend's. Metadata needs neither package.

The AWQ kernels are CUDA kernels: on a machine without a GPU the model is loaded on the CPU
through gptqmodel's torch kernel (slow, and a warning says so); ``extra.device: cpu`` asks
for that on purpose.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Any

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo
from qgate.errors import BackendError, MissingExtraError
from qgate.hookspecs import hookimpl
from qgate.progress import Progress
from qgate_hf.folder import DTYPE_BITS, HFFolder, base_info, detected_quantization, read_folder
from qgate_hf.model import HFModel, import_torch, import_transformers

#: tensors of one AWQ-quantized linear layer
AWQ_SUFFIXES = ("qweight", "qzeros", "scales", "bias")


def awq_settings(folder: HFFolder) -> tuple[int, int | None, str | None]:
    """(bits, group size, kernel version) from ``quantization_config`` (AutoAWQ's key names too)."""
    qcfg = folder.quantization_config or {}
    try:
        bits = int(qcfg.get("bits", qcfg.get("w_bit", 4)))
    except (TypeError, ValueError):
        raise BackendError(f"{folder.path}: quantization_config.bits is not a number") from None
    if bits not in (2, 3, 4, 8):
        raise BackendError(f"{folder.path}: AWQ with {bits} bits is not a known layout")
    group = qcfg.get("group_size", qcfg.get("q_group_size"))
    version = qcfg.get("version")
    return (
        bits,
        int(group) if isinstance(group, (int, float)) else None,
        (str(version).lower() if version is not None else None),
    )


def awq_info(folder: HFFolder) -> ModelInfo:
    bits, group, version = awq_settings(folder)
    modules: dict[str, set[str]] = defaultdict(set)
    for name in folder.tensors:
        prefix, _, suffix = name.rpartition(".")
        modules[prefix].add(suffix)
    quantized = {p for p, parts in modules.items() if "qweight" in parts}
    per_int32 = 32 // bits
    label = f"AWQ_W{bits}" + (f"_G{group}" if group else "")
    by_name: dict[str, str] = {}
    elements = total_bits = q_elements = q_bits = 0
    for prefix in quantized:
        n = folder.tensors[f"{prefix}.qweight"].n_elements * per_int32
        module_bits = sum(
            folder.tensors[f"{prefix}.{s}"].n_bytes * 8
            for s in AWQ_SUFFIXES
            if f"{prefix}.{s}" in folder.tensors
        )
        q_elements += n
        q_bits += module_bits
        by_name[f"{prefix}.weight"] = label
    for tensor in folder.tensors.values():
        prefix, _, suffix = tensor.name.rpartition(".")
        if prefix in quantized and suffix in AWQ_SUFFIXES:
            continue
        elements += tensor.n_elements
        total_bits += tensor.n_elements * DTYPE_BITS[tensor.dtype]
        by_name[tensor.name] = tensor.dtype
    total = elements + q_elements
    info = base_info(
        folder,
        fmt="awq",
        parameter_count=total,
        bits_per_weight=round((total_bits + q_bits) / total, 4) if total else None,
        tensor_type_by_name=by_name,
        file_type=label,
    )
    info.extra.update(
        {
            "awq_bits": bits,
            "awq_group_size": group,
            "awq_version": version,
            "awq_zero_point": (folder.quantization_config or {}).get("zero_point"),
            "awq_linear_bits_per_weight": round(q_bits / q_elements, 4) if q_elements else None,
            "awq_quantized_layers": len(quantized),
        }
    )
    return info


#: gptqmodel's AWQ kernel on CUDA: a Triton GEMM, compiled by Triton in seconds; gptqmodel's own
#: choice ("auto": Machete, Marlin, ...) builds CUDA extensions with nvcc for minutes first
GPU_KERNEL = "gemm_triton"


class AWQModel(HFModel):
    """The hf backend's model, loaded through transformers' AWQ integration (gptqmodel)."""

    backend_name = "awq"
    extra_name = "awq"

    def __init__(self, path: Path, info: ModelInfo, options: BackendOptions, **kw: Any):
        torch = import_torch("awq", "awq")
        if importlib.util.find_spec("gptqmodel") is None:
            raise MissingExtraError("awq", "awq", "gptqmodel")
        requested = options.extra.get("device")
        if requested is None and not torch.cuda.is_available():
            Progress().log(
                "warning: no CUDA GPU: loading the AWQ model on the CPU through gptqmodel's "
                "torch kernel (slow; the AWQ GPU kernels need CUDA)"
            )
        super().__init__(path, info, options, **kw)

    def _load_kwargs(self) -> dict[str, Any]:
        kwargs = {**super()._load_kwargs(), "device_map": self.device}
        kernel = self.options.extra.get("kernel", GPU_KERNEL if self.device != "cpu" else None)
        if kernel is not None and kernel != "auto":
            transformers = import_transformers(self.backend_name, self.extra_name)
            kwargs["quantization_config"] = transformers.AwqConfig(backend=kernel)
        return kwargs


class AWQBackend(Backend):
    name = "awq"
    description = (
        "AutoAWQ checkpoints (quant_method awq, gemm/gemv) through transformers + gptqmodel; "
        "CUDA, or the CPU through gptqmodel's torch kernel"
    )
    extra = "awq"

    def detect(self, path: Path) -> bool:
        return detected_quantization(path) == "awq"

    def inspect(self, path: Path) -> ModelInfo:
        folder = read_folder(path)
        if folder.quant_method != "awq":
            raise BackendError(
                f"{path}: not an AWQ model (config.json quantization_config.quant_method is "
                f"{folder.quant_method!r}, expected 'awq')"
            )
        if not any(name.endswith(".qweight") for name in folder.tensors):
            raise BackendError(f"{path}: an AWQ config but no .qweight tensors in the weights")
        return awq_info(folder)

    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        return AWQModel(path, self.inspect(path), options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [AWQBackend()]
