"""The GGUF backend: llama.cpp models through llama-cpp-python (``pip install 'qgate[gguf]'``)."""

from __future__ import annotations

from pathlib import Path

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate_gguf.metadata import GGUF_MAGIC, read_metadata


class GGUFBackend(Backend):
    name = "gguf"
    description = "GGUF files through llama-cpp-python (CPU, or GPU with --gpu-layers)"
    extra = "gguf"

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            with path.open("rb") as handle:
                return handle.read(4) == GGUF_MAGIC
        except OSError:
            return False

    def inspect(self, path: Path) -> ModelInfo:
        if not path.is_file():
            raise BackendError(f"{path}: not a file")
        return read_metadata(path)

    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        from qgate_gguf.llama import LlamaCppModel

        # Validate the header with qgate's strict reader before llama.cpp parses the file.
        return LlamaCppModel(path, self.inspect(path), options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [GGUFBackend()]
