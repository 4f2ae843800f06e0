"""The awq backend: AutoAWQ-format checkpoints through transformers (``pip install 'qgate-llm[awq]'``).

An AWQ model is a Hugging Face folder whose ``config.json`` has ``quantization_config`` with
``quant_method: awq`` (``bits``, ``group_size``, ``version`` gemm/gemv) and whose linear layers
are stored as ``.qweight`` / ``.qzeros`` / ``.scales``. transformers loads it with gptqmodel's
kernels; scoring and generation are the shared transformers model's
(:mod:`qgate_transformers.model`). Metadata needs neither package.

The AWQ kernels are CUDA kernels: on a machine without a GPU the model is loaded on the CPU
through gptqmodel's torch kernel (slow, and a warning says so); ``extra.device: cpu`` asks
for that on purpose.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo
from qgate.errors import BackendError, MissingExtraError
from qgate.hookspecs import hookimpl
from qgate.progress import Progress
from qgate_transformers.folder import HFFolder, base_info, folder_quantization, read_folder
from qgate_transformers.integrity import SafetensorsScan
from qgate_transformers.model import TransformersModel
from qgate_transformers.quantized import quantized_sizes
from qgate_transformers.runtime import import_torch, import_transformers

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
    """Bits per weight from the tensors: a layer's ``qweight`` packs ``32 // bits`` weights per
    int32, and the layer costs all its tensors' bytes (zeros and scales included)."""
    bits, group, version = awq_settings(folder)
    label = f"AWQ_W{bits}" + (f"_G{group}" if group else "")
    sizes = quantized_sizes(
        folder,
        marker="qweight",
        suffixes=AWQ_SUFFIXES,
        weights_of=lambda prefix: folder.tensors[f"{prefix}.qweight"].n_elements * (32 // bits),
        type_of=lambda stored, n: label,
    )
    info = base_info(
        folder,
        fmt="awq",
        parameter_count=sizes.parameter_count,
        bits_per_weight=sizes.bits_per_weight,
        tensor_type_by_name=sizes.tensor_type_by_name,
        file_type=label,
    )
    info.extra.update(
        {
            "awq_bits": bits,
            "awq_group_size": group,
            "awq_version": version,
            "awq_zero_point": (folder.quantization_config or {}).get("zero_point"),
            "awq_linear_bits_per_weight": sizes.linear_bits_per_weight,
            "awq_quantized_layers": sizes.layers,
        }
    )
    return info


#: gptqmodel's AWQ kernel on CUDA: a Triton GEMM, compiled by Triton in seconds; gptqmodel's own
#: choice ("auto": Machete, Marlin, ...) builds CUDA extensions with nvcc for minutes first
GPU_KERNEL = "gemm_triton"


class AWQModel(TransformersModel):
    """The transformers model, loaded through transformers' AWQ integration (gptqmodel)."""

    backend_name = "awq"
    extra_name = "awq"

    def __init__(self, info: ModelInfo, options: BackendOptions, **kw: Any):
        torch = import_torch("awq", "awq")
        if importlib.util.find_spec("gptqmodel") is None:
            raise MissingExtraError("awq", "awq", "gptqmodel")
        requested = options.extra.get("device")
        if requested is None and not torch.cuda.is_available():
            Progress().log(
                "warning: no CUDA GPU: loading the AWQ model on the CPU through gptqmodel's "
                "torch kernel (slow; the AWQ GPU kernels need CUDA)"
            )
        super().__init__(info, options, **kw)

    def _load_kwargs(self) -> dict[str, Any]:
        kwargs = {**super()._load_kwargs(), "device_map": self.device}
        kernel = self.options.extra.get("kernel", GPU_KERNEL if self.device != "cpu" else None)
        if kernel is not None and kernel != "auto":
            transformers = import_transformers(self.backend_name, self.extra_name)
            kwargs["quantization_config"] = transformers.AwqConfig(backend=kernel)
        return kwargs


class AWQBackend(SafetensorsScan, Backend):
    name = "awq"
    description = (
        "AutoAWQ checkpoints (quant_method awq, gemm/gemv) through transformers + gptqmodel; "
        "CUDA, or the CPU through gptqmodel's torch kernel"
    )
    extra = "awq"

    def detect(self, path: Path) -> float:
        """Certain when config.json's quantization_config says awq, else 0."""
        return 1.0 if folder_quantization(path) == "awq" else 0.0

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
        return AWQModel(self.inspect(path), options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [AWQBackend()]
