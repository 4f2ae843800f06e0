"""GGUF metadata as a :class:`~qgate.backend.ModelInfo`, read from the header alone."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from qgate.backend import ModelInfo
from qgate.errors import MissingExtraError
from qgate_gguf.config_record import config_record
from qgate_gguf.reader import GGUF_MAGIC, ArraySummary, GGUFHeader, read_gguf_header
from qgate_gguf.tokenizer_facts import tokenizer_facts

__all__ = ["GGUF_MAGIC", "read_metadata"]

_NOT_IDENTITY = {
    "general.architecture",
    "general.file_type",
    "general.alignment",
    "general.quantization_version",
}


def read_metadata(path: Path) -> ModelInfo:
    """Architecture, size, quantization, tokenizer and identity of a GGUF file."""
    try:
        import gguf
    except ImportError:
        raise MissingExtraError("gguf", "gguf", "gguf") from None
    header = read_gguf_header(path)
    fields = header.fields
    arch = str(fields.get("general.architecture", "unknown"))
    n_elements = sum(t.n_elements for t in header.tensors)
    n_bytes = sum(t.n_bytes for t in header.tensors)
    type_by_name = {t.name: t.type_name for t in header.tensors}
    file_type = fields.get("general.file_type")
    try:
        file_type_name = (
            gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
            if file_type is not None
            else None
        )
    except (ValueError, TypeError, OverflowError):  # a float NaN or infinity too
        file_type_name = f"unknown({file_type})"
    tokens = fields.get("tokenizer.ggml.tokens")
    template = fields.get("tokenizer.chat_template")
    identity = {
        key.removeprefix("general."): str(value)
        for key, value in fields.items()
        if key.startswith("general.")
        and key not in _NOT_IDENTITY
        and isinstance(value, (str, int, float))
    }
    return ModelInfo(
        path=str(path),
        format="gguf",
        label=path.name,
        architecture=arch,
        parameter_count=n_elements,
        file_type=file_type_name,
        bits_per_weight=round(n_bytes * 8 / n_elements, 4) if n_elements else None,
        tensor_types=dict(Counter(type_by_name.values())),
        tensor_type_by_name=type_by_name,
        expert_count=_int(fields.get(f"{arch}.expert_count")) or 0,
        context_length=_int(fields.get(f"{arch}.context_length")),
        vocab_size=tokens.count if isinstance(tokens, ArraySummary) else None,
        identity=identity,
        tokenizer_hash=tokenizer_hash(header),
        chat_template=template if isinstance(template, str) else None,
        chat_template_hash=hashlib.sha256(template.encode()).hexdigest()
        if isinstance(template, str)
        else None,
        file_size=header.file_size,
        extra={
            "gguf_version": header.version,
            "has_chat_template": isinstance(template, str),
            "tensor_count": len(header.tensors),
        },
        tokenizer=tokenizer_facts(path, header),
        config=config_record(header),
    )


def tokenizer_hash(header: GGUFHeader) -> str | None:
    """A digest of the tokenizer model name and its vocabulary (tokens in order)."""
    tokens = header.fields.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, ArraySummary):
        return None
    model = str(header.fields.get("tokenizer.ggml.model", ""))
    return hashlib.sha256(f"{model}\x01{tokens.sha256}".encode()).hexdigest()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
