"""The hf backend: Hugging Face model folders through transformers (``pip install 'qgate[hf]'``).

A model is a folder with ``config.json`` and ``*.safetensors`` weights. qgate never unpickles
(a folder with ``pytorch_model.bin`` / ``*.pt`` / ``*.pkl`` is refused) and never runs a model's
own code (``trust_remote_code=False``, and a config with ``auto_map`` is refused). The usual use
is the full-precision reference of a GGUF, EXL2 or AWQ quant.
"""

from __future__ import annotations

from pathlib import Path

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo, TensorReader
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate_transformers.folder import (
    HFFolder,
    base_info,
    first_weights_header,
    folder_quantization,
    has_packed_weights,
    read_folder,
)
from qgate_transformers.safetensors_header import DTYPE_BITS

#: how sure the hf backend is of a folder with no quantization marker: any Hugging Face-style
#: format is such a folder, so a backend that finds its own marker in it wins
PLAIN_FOLDER = 0.5


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

    def detect(self, path: Path) -> float:
        """Plausible for a model folder without a quantization marker (none in config.json,
        no packed integer weights); 0 otherwise, so a quantized folder is never taken for hf."""
        if folder_quantization(path) != "":  # not a folder, or quantized: another backend's
            return 0.0
        header = first_weights_header(path)
        if header is None or has_packed_weights(header):
            return 0.0
        return PLAIN_FOLDER

    def inspect(self, path: Path) -> ModelInfo:
        return dense_info(self._unquantized(path))

    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        from qgate_hf.model import HFModel

        return HFModel(self.inspect(path), options)

    def tensor_reader(self, path: Path) -> TensorReader | None:
        """The folder's weights when they are all F32, F16 or BF16; None for a quantized one."""
        from qgate_transformers.weights import float_tensor_reader

        return float_tensor_reader(read_folder(path))

    @staticmethod
    def _unquantized(path: Path) -> HFFolder:
        folder = read_folder(path)
        if folder.quant_method is not None:
            raise BackendError(
                f"{path}: the model is quantized ({folder.quant_method!r} in config.json "
                "quantization_config); the hf backend reads unquantized folders: use "
                f"--backend {folder.quant_method} if qgate has that backend"
            )
        return folder


@hookimpl
def qgate_backends() -> list[Backend]:
    return [HFBackend()]
