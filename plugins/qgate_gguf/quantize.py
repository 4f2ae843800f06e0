"""Requantize GGUF files with llama.cpp (for tests, benchmarks and quant ladders)."""

from __future__ import annotations

import os
from pathlib import Path

from qgate.errors import BackendError
from qgate_gguf.llama import _initialise, _recent_log, import_llama_cpp


def quantize(
    source: Path,
    target: Path,
    file_type: str,
    *,
    allow_requantize: bool = True,
    threads: int | None = None,
) -> Path:
    """Write ``source`` quantized to ``file_type`` (``F16``, ``Q8_0``, ``Q4_K_M``, ``Q2_K``...)."""
    L = import_llama_cpp()
    _initialise(L)
    name = (
        f"LLAMA_FTYPE_MOSTLY_{file_type.upper()}"
        if file_type.upper() not in ("F32", "ALL_F32")
        else "LLAMA_FTYPE_ALL_F32"
    )
    ftype = getattr(L, name, None)
    if ftype is None:
        raise BackendError(f"unknown GGUF file type {file_type!r}")
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    params.nthread = threads or os.cpu_count() or 1
    target.parent.mkdir(parents=True, exist_ok=True)
    status = L.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise BackendError(f"quantizing {source} to {file_type} failed ({status}): {_recent_log()}")
    return target
