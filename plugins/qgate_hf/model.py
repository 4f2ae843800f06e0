"""The hf backend's loaded model: the shared transformers model, under the hf backend's name."""

from __future__ import annotations

from qgate_transformers.model import TransformersModel


class HFModel(TransformersModel):
    """A transformers causal LM on CPU or one CUDA device."""

    backend_name = "hf"
    extra_name = "hf"
