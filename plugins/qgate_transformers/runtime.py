"""torch and transformers: imported on use (a missing extra is a clear error), and the device
and dtype a model runs in."""

from __future__ import annotations

from typing import Any

from qgate.errors import BackendError, MissingExtraError

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def import_torch(backend: str, extra: str) -> Any:
    """torch, or a :class:`MissingExtraError` naming ``backend`` and its pip ``extra``."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError(backend, extra, "torch") from None
    return torch


def import_transformers(backend: str, extra: str) -> Any:
    """transformers, or a :class:`MissingExtraError` naming ``backend`` and its pip ``extra``."""
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(backend, extra, "transformers") from None
    return transformers


def resolve_device(torch: Any, requested: Any, backend: str) -> str:
    """``extra["device"]``: cpu, cuda or cuda:N; default cuda when a GPU is visible."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(requested).lower()
    if device != "cpu" and not device.startswith("cuda"):
        raise BackendError(f"the {backend} backend runs on 'cpu' or 'cuda' (got device {device!r})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            f"the {backend} backend was asked for device {device!r} but torch sees no CUDA GPU "
            f"(torch {torch.__version__})"
        )
    return device


def resolve_dtype(torch: Any, requested: Any, device: str) -> Any:
    """``extra["dtype"]``: float16, bfloat16 or float32; default float32 on CPU, float16 on CUDA."""
    if requested is None:
        return torch.float32 if device == "cpu" else torch.float16
    name = _DTYPES.get(str(requested).lower())
    if name is None:
        raise BackendError(
            f"unknown dtype {requested!r}: use float16, bfloat16 or float32 (extra.dtype)"
        )
    return getattr(torch, name)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
