"""The hf backend: Hugging Face model folders through transformers (``pip install 'qgate-llm[hf]'``).

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
    dense_info,
    first_weights_header,
    folder_quantization,
    has_packed_weights,
    read_folder,
)
from qgate_transformers.integrity import SafetensorsScan

#: how sure the hf backend is of a folder with no quantization marker: any Hugging Face-style
#: format is such a folder, so a backend that finds its own marker in it wins
PLAIN_FOLDER = 0.5


class HFBackend(SafetensorsScan, Backend):
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
