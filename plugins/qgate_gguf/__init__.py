"""The GGUF backend: llama.cpp models through llama-cpp-python (``pip install 'qgate-llm[gguf]'``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from qgate.backend import (
    Backend,
    BackendOptions,
    LoadedModel,
    ModelInfo,
    TensorHealth,
    TensorReader,
)
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate_gguf.metadata import GGUF_MAGIC, read_metadata


class GGUFBackend(Backend):
    name = "gguf"
    description = "GGUF files through llama-cpp-python (CPU, or GPU with --gpu-layers)"
    extra = "gguf"

    def detect(self, path: Path) -> float:
        """Certain for a file that starts with the GGUF magic, else 0."""
        if not path.is_file():
            return 0.0
        try:
            with path.open("rb") as handle:
                return 1.0 if handle.read(4) == GGUF_MAGIC else 0.0
        except OSError:
            return 0.0

    def inspect(self, path: Path) -> ModelInfo:
        if not path.is_file():
            raise BackendError(f"{path}: not a file")
        return read_metadata(path)

    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        from qgate_gguf.llama import LlamaCppModel

        # Validate the header with qgate's strict reader before llama.cpp parses the file.
        return LlamaCppModel(self.inspect(path), options)

    def tensor_reader(self, path: Path) -> TensorReader:
        """Every tensor of the file, dequantized with the ``gguf`` package (no llama.cpp)."""
        from qgate_gguf.reader import recent_header
        from qgate_gguf.weights import GGUFWeights

        if not path.is_file():
            raise BackendError(f"{path}: not a file")
        return GGUFWeights(path, recent_header(path))

    def scan_tensors(self, path: Path) -> Iterator[TensorHealth]:
        """Every tensor's stored numbers (block scales of quantized types), read once."""
        from qgate_gguf.integrity import scan_gguf
        from qgate_gguf.reader import recent_header

        if not path.is_file():
            raise BackendError(f"{path}: not a file")
        return scan_gguf(path, recent_header(path))


@hookimpl
def qgate_backends() -> list[Backend]:
    return [GGUFBackend()]
