"""The hf backend: Hugging Face model folders through transformers (``pip install 'qgate[hf]'``).

A model is a folder with ``config.json`` and ``*.safetensors`` weights. qgate never unpickles
(a folder with ``pytorch_model.bin`` / ``*.pt`` / ``*.pkl`` is refused) and never runs a model's
own code (``trust_remote_code=False``, and a config with ``auto_map`` is refused). The usual use
is the full-precision reference of a GGUF, EXL2 or AWQ quant.
"""

from __future__ import annotations

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


def dense_info(folder: HFFolder, fmt: str = "hf") -> ModelInfo:
    """Metadata of an unquantized folder: every tensor counts at its dtype's width."""
    elements = sum(t.n_elements for t in folder.tensors.values())
    bits = sum(t.n_elements * DTYPE_BITS[t.dtype] for t in folder.tensors.values())
    by_name = {t.name: t.dtype for t in folder.tensors.values()}
    # the file type is the dtype of the largest share of the matrices (norms are often F32)
    matrices: dict[str, int] = {}
    for t in folder.tensors.values():
        if len(t.shape) >= 2:
            matrices[t.dtype] = matrices.get(t.dtype, 0) + t.n_elements
    file_type = max(matrices, key=lambda k: matrices[k]) if matrices else None
    return base_info(
        folder,
        fmt=fmt,
        parameter_count=elements,
        bits_per_weight=round(bits / elements, 4) if elements else None,
        tensor_type_by_name=by_name,
        file_type=file_type,
    )


class HFBackend(Backend):
    name = "hf"
    description = (
        "Hugging Face folders (config.json + *.safetensors) through transformers, CPU or CUDA; "
        "extra.dtype float16/bfloat16/float32, extra.device cpu/cuda"
    )
    extra = "hf"

    def detect(self, path: Path) -> bool:
        if detected_quantization(path) != "":  # not a folder, or quantized: another backend's
            return False
        try:  # an EXL2 or AWQ/GPTQ folder without a quantization_config is not for hf
            first = sorted(path.glob("*.safetensors"))[0]
            names = read_safetensors_header(first)
        except (BackendError, IndexError):
            return False
        return not any(n.endswith((".q_weight", ".qweight")) for n in names)

    def inspect(self, path: Path) -> ModelInfo:
        folder = read_folder(path)
        if folder.quant_method is not None:
            raise BackendError(
                f"{path}: the model is quantized ({folder.quant_method!r} in config.json "
                "quantization_config); the hf backend reads unquantized folders: use "
                f"--backend {folder.quant_method} if qgate has that backend"
            )
        return dense_info(folder)

    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        from qgate_hf.model import HFModel

        return HFModel(path, self.inspect(path), options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [HFBackend()]
