"""A Hugging Face model folder described without loading its weights: :class:`HFFolder`.

``config.json``, ``tokenizer.json``, ``tokenizer_config.json`` and the headers of the
``*.safetensors`` files are all a backend needs to describe a model. The hf, exl2 and awq
backends share this reader (:func:`read_folder`, :func:`base_info`); each adds what its format
says about quantization. :func:`folder_quantization` and :func:`has_packed_weights` are the cheap
tests their ``detect()`` builds on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgate.backend import ModelInfo
from qgate.errors import BackendError
from qgate_transformers.config import MAX_EXPERTS, read_config, refuse_unsafe, text_count
from qgate_transformers.jsonfile import load_json
from qgate_transformers.model_config import config_record
from qgate_transformers.safetensors_header import (
    DTYPE_BITS,
    TensorEntry,
    read_safetensors_header,
)
from qgate_transformers.tokenizer_facts import tokenizer_facts
from qgate_transformers.tokenizer_files import (
    TOKENIZER_FAMILY,
    chat_template,
    load_tokenizer_json,
    tokenizer_hash,
    tokenizer_vocab,
)


@dataclass
class HFFolder:
    """What a model folder says about itself, read from its JSON files and tensor headers."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorEntry]
    weight_files: list[Path]
    tokenizer_config: dict[str, Any] = field(default_factory=dict)

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        qcfg = self.config.get("quantization_config")
        return qcfg if isinstance(qcfg, dict) else None

    @property
    def quant_method(self) -> str | None:
        qcfg = self.quantization_config
        method = qcfg.get("quant_method") if qcfg else None
        return str(method).lower() if method is not None else None

    @property
    def file_size(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def looks_like_folder(path: Path) -> bool:
    """A folder with a ``config.json`` and at least one ``*.safetensors`` file (cheap)."""
    return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def folder_quantization(path: Path) -> str | None:
    """For a backend's cheap ``detect()``: the folder's lowercase ``quant_method``, ``""`` when
    the config names no quantization, ``"unknown"`` for a ``quantization_config`` without a
    method, and ``None`` when ``path`` is not a readable model folder. Never raises."""
    if not looks_like_folder(path):
        return None
    try:
        config = load_json(path / "config.json")
    except BackendError:
        return None
    if not isinstance(config, dict):
        return None
    qcfg = config.get("quantization_config")
    if not qcfg:
        return ""
    method = qcfg.get("quant_method") if isinstance(qcfg, dict) else None
    return str(method).lower() if method else "unknown"


def first_weights_header(path: Path) -> dict[str, TensorEntry] | None:
    """The tensors of the folder's first ``*.safetensors`` file (by name), or None when there
    is none or it cannot be read: enough for ``detect()`` to tell a format by its tensors."""
    try:
        first = min(path.glob("*.safetensors"))
        return read_safetensors_header(first)
    except (OSError, ValueError, BackendError):
        return None


def has_packed_weights(tensors: dict[str, TensorEntry]) -> bool:
    """Whether weight matrices are stored as packed 32-bit integers: how EXL2, AWQ and GPTQ
    store low-bit weights, with or without a ``quantization_config`` that says so. A
    full-precision model's matrices are floats."""
    return any(t.dtype == "I32" and len(t.shape) >= 2 for t in tensors.values())


def read_folder(path: Path) -> HFFolder:
    """Config, tokenizer settings and tensor headers of a model folder; refuses unsafe folders."""
    config = read_config(path)
    refuse_unsafe(path, config)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise BackendError(f"{path}: no *.safetensors weights (qgate reads only safetensors)")
    tensors: dict[str, TensorEntry] = {}
    for file in files:
        for name, tensor in read_safetensors_header(file).items():
            if name in tensors:  # which copy would a loader take? refuse, as for GGUF
                raise BackendError(
                    f"{path}: tensor {name!r} is in both {_file_name(tensors[name])} and "
                    f"{file.name}"
                )
            tensors[name] = tensor
    if not tensors:
        raise BackendError(f"{path}: the safetensors files hold no tensors")
    tokenizer_config: dict[str, Any] = {}
    tc_file = path / "tokenizer_config.json"
    if tc_file.is_file():
        loaded = load_json(tc_file)
        tokenizer_config = loaded if isinstance(loaded, dict) else {}
    if tokenizer_config.get("auto_map"):
        raise BackendError(
            f"{path}: tokenizer_config.json maps the tokenizer to code in the model folder "
            "(auto_map), which would need trust_remote_code; qgate never runs a model's own code"
        )
    return HFFolder(path, config, tensors, files, tokenizer_config)


def _file_name(tensor: TensorEntry) -> str:
    return tensor.file.name if tensor.file is not None else "?"


def base_info(
    folder: HFFolder,
    *,
    fmt: str,
    parameter_count: int,
    bits_per_weight: float | None,
    tensor_type_by_name: dict[str, str],
    file_type: str | None,
) -> ModelInfo:
    """The :class:`ModelInfo` fields every Hugging Face folder format fills the same way."""
    config = folder.config
    architectures = config.get("architectures")
    architecture = (
        str(architectures[0])
        if isinstance(architectures, list) and architectures
        else str(config.get("model_type") or "unknown")
    )
    tokenizer_data = load_tokenizer_json(folder.path)
    tokens = tokenizer_vocab(folder.path, tokenizer_data)
    file = folder.path / "config.json"
    vocab_size = text_count(config, "vocab_size", file)
    experts = text_count(config, "num_local_experts", file, minimum=0, maximum=MAX_EXPERTS)
    experts = experts or text_count(config, "num_experts", file, minimum=0, maximum=MAX_EXPERTS)
    context_length = text_count(config, "max_position_embeddings", file)
    template = chat_template(folder.path, folder.tokenizer_config)
    return ModelInfo(
        path=str(folder.path),
        format=fmt,
        label=folder.path.name,
        architecture=architecture,
        parameter_count=parameter_count,
        file_type=file_type,
        bits_per_weight=bits_per_weight,
        tensor_types=dict(Counter(tensor_type_by_name.values())),
        tensor_type_by_name=tensor_type_by_name,
        expert_count=experts or 0,
        context_length=context_length,
        vocab_size=vocab_size,
        identity=_identity(folder),
        tokenizer_hash=tokenizer_hash(tokens),
        chat_template=template,
        chat_template_hash=hashlib.sha256(template.encode()).hexdigest() if template else None,
        file_size=folder.file_size,
        extra={
            "tokenizer_family": TOKENIZER_FAMILY,
            "tokenizer_tokens": len(tokens) if tokens is not None else None,
            "tensor_count": len(folder.tensors),
            "weight_files": [p.name for p in folder.weight_files],
            "has_chat_template": template is not None,
        },
        tokenizer=tokenizer_facts(tokenizer_data, tokens, folder.tokenizer_config, config),
        config=config_record(config, file, fmt),
    )


def _identity(folder: HFFolder) -> dict[str, str]:
    """What the config says the model is: its name, type and the transformers that wrote it."""
    config = folder.config
    identity = {"name": str(config.get("_name_or_path") or folder.path.name)}
    if config.get("model_type"):
        identity["model_type"] = str(config["model_type"])
    if config.get("transformers_version"):
        identity["transformers_version"] = str(config["transformers_version"])
    return identity


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
