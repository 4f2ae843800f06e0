"""Hugging Face model folders read without loading weights (and without unpickling anything).

``config.json``, ``tokenizer.json``, ``tokenizer_config.json`` and the JSON headers of the
``*.safetensors`` files (8-byte little-endian length, then a JSON object naming every tensor's
dtype, shape and byte range) are all a backend needs to describe a model. The hf, exl2 and awq
backends share this reader; each adds what its format says about quantization.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgate.backend import ModelInfo
from qgate.errors import BackendError

#: bits per element of each safetensors dtype
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
}

#: files that need pickle to read: never opened, and a folder holding one is refused
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: the tokenizer family every Hugging Face folder shares (``tokenizer.json``), so hashes of an
#: hf reference and an exl2 or awq subject compare; a GGUF vocabulary is hashed differently
TOKENIZER_FAMILY = "huggingface"

_MAX_HEADER = 100 << 20  # a safetensors header over 100 MiB is corrupt, not big
#: the largest vocabulary or context length a config may declare: far above any real model,
#: far below sizes whose arithmetic (or allocation) would hang or overflow downstream
MAX_CONFIG_COUNT = 1 << 32
#: token ids of ``tokenizer.json`` must be below this (real vocabularies have up to ~10^6)
MAX_TOKEN_ID = 1 << 24
#: the largest number of experts a config may declare
MAX_EXPERTS = 1 << 16
#: integers in ``quantization_config`` beyond this are absurd, and ``float()`` of them overflows
_MAX_QUANT_INT = 1 << 53
_SURROGATE = re.compile("[\ud800-\udfff]")


def load_json(file: Path) -> Any:
    """A JSON file of a model folder, or a :class:`BackendError` naming it.

    Python's ``json`` raises more than ``JSONDecodeError`` on hostile input: ``ValueError``
    for an integer of thousands of digits, ``RecursionError`` for deep nesting. A ``"\\ud800"``
    escape decodes to a lone surrogate that no UTF-8 writer accepts, so every such character
    becomes U+FFFD here, before a label or template carries it into reports and caches.
    """
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BackendError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BackendError(f"{file}: not valid JSON: {exc}") from None
    return replace_surrogates(data)


def replace_surrogates(data: Any) -> Any:
    """``data`` with every lone surrogate in its strings (keys too) replaced by U+FFFD.

    Iterative, not recursive: ``json`` parses deeper nesting than Python's recursion limit.
    Containers are changed in place; the (possibly new) top-level value is returned.
    """
    if isinstance(data, str):
        return _SURROGATE.sub("\ufffd", data)
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in [k for k in item if isinstance(k, str) and _SURROGATE.search(k)]:
                item[_SURROGATE.sub("\ufffd", key)] = item.pop(key)
            pairs: Any = item.items()
        elif isinstance(item, list):
            pairs = enumerate(item)
        else:
            continue
        for key, value in list(pairs):
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    item[key] = _SURROGATE.sub("\ufffd", value)
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return data


def config_count(
    config: dict[str, Any],
    key: str,
    file: Path,
    *,
    minimum: int = 1,
    maximum: int = MAX_CONFIG_COUNT,
    where: str = "",
) -> int | None:
    """``config[key]`` as a whole number in ``[minimum, maximum]``, None when absent or null.

    Anything else (``1e999``, ``NaN``, ``-5``, ``3.5``, ``"32000"``, ``true``, a list) is a
    :class:`BackendError` naming the file and the key: a count that is not a count must not
    reach ``int()`` (OverflowError on infinity) or the checks (a vocabulary of 10^30 tokens).
    """
    value = config.get(key)
    if value is None:
        return None
    problem = f"{file}: {where}{key}: expected a whole number from {minimum} to {maximum}, got"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BackendError(f"{problem} {_json_type(value)} {_shown(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        what = "a non-finite number" if not math.isfinite(value) else "a fraction"
        raise BackendError(f"{problem} {what} ({value!r})")
    if not minimum <= value <= maximum:
        raise BackendError(f"{problem} {_shown(value)}")
    return int(value)


def check_numbers(data: Any, where: str, file: Path) -> None:
    """Refuse non-finite floats and absurdly large integers anywhere in ``data`` (a config
    section whose every number is used, such as ``quantization_config``)."""
    stack: list[tuple[str, Any]] = [(where, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack += [(f"{path}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, float) and not math.isfinite(value):
            raise BackendError(f"{file}: {path}: expected a finite number, got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_QUANT_INT:
            raise BackendError(f"{file}: {path}: absurd number {_shown(value)}")


def _json_type(value: Any) -> str:
    names = {str: "string", bool: "boolean", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON spells it, cut: a hostile value may be megabytes long (or 4,000
    digits)."""
    if isinstance(value, int) and value.bit_length() > 192:
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # nested deeper than json.dumps goes
        return f"a deeply nested {_json_type(value)}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


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


def detected_quantization(path: Path) -> str | None:
    """For a backend's cheap ``detect()``: the folder's lowercase ``quant_method``, ``""`` when
    the model is not quantized, ``"unknown"`` for a ``quantization_config`` without a method,
    and ``None`` when ``path`` is not a readable model folder. Never raises."""
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


def read_config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not path.is_dir():
        raise BackendError(f"{path}: not a folder (a Hugging Face model is a folder)")
    if not file.is_file():
        raise BackendError(f"{path}: no config.json: not a Hugging Face model folder")
    config = load_json(file)
    if not isinstance(config, dict):
        raise BackendError(f"{file}: expected a JSON object")
    # every number of quantization_config is read by a backend (bits, group size, ...)
    check_numbers(config.get("quantization_config"), "quantization_config", file)
    return config


def refuse_unsafe(path: Path, config: dict[str, Any]) -> None:
    """Refuse pickled weights and models that need code from the model's repository."""
    pickled = sorted(
        p.name for p in path.iterdir() if p.is_file() and p.name.lower().endswith(PICKLE_SUFFIXES)
    )
    if pickled:
        raise BackendError(
            f"{path}: holds pickled weights ({', '.join(pickled)}); qgate never unpickles model "
            "files (loading a pickle can run arbitrary code): convert the model to safetensors, "
            "or remove those files if *.safetensors already hold the weights"
        )
    auto_map = config.get("auto_map")
    if auto_map:
        classes = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
        raise BackendError(
            f"{path}: config.json maps {classes} to code in the model folder (auto_map), which "
            "would need trust_remote_code; qgate never runs a model's own code"
        )


def read_safetensors_header(file: Path) -> dict[str, TensorEntry]:
    """Every tensor of one safetensors file: dtype, shape and size, from the header alone."""
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise BackendError(f"{file}: truncated: no safetensors header")
            (length,) = struct.unpack("<Q", raw)
            if length > min(_MAX_HEADER, size - 8):
                raise BackendError(
                    f"{file}: header length {length} is impossible in a file of {size} bytes "
                    "(truncated or not a safetensors file)"
                )
            text = handle.read(length)
    except OSError as exc:
        raise BackendError(f"{file}: cannot read: {exc}") from None
    try:
        header = replace_surrogates(json.loads(text.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BackendError(f"{file}: corrupt safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise BackendError(f"{file}: corrupt safetensors header: not a JSON object")
    data_size = size - 8 - length
    tensors: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            shape = tuple(_header_int(d) for d in entry["shape"])
            begin, end = (_header_int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise BackendError(f"{file}: corrupt safetensors header entry for {name!r}") from None
        if dtype not in DTYPE_BITS:
            raise BackendError(f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
        tensor = TensorEntry(name, dtype, shape, end - begin)
        if (
            not 0 <= begin <= end <= data_size
            or tensor.n_elements * DTYPE_BITS[dtype] // 8 != end - begin
        ):
            raise BackendError(
                f"{file}: tensor {name!r} ({dtype} {list(shape)}) does not fit its byte range "
                f"[{begin}, {end}) of {data_size} data bytes (truncated or corrupt)"
            )
        tensors[name] = tensor
    return tensors


def _header_int(value: Any) -> int:
    """A dimension or offset of a safetensors header: a non-negative JSON integer, nothing else
    (``int()`` would take ``"12"``, truncate ``2.5``, overflow on ``1e999``, and a pair of
    negative dimensions would multiply to a plausible size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a non-negative integer: {_shown(value)}")
    return value


def read_folder(path: Path) -> HFFolder:
    """Config, tokenizer settings and tensor headers of a model folder; refuses unsafe folders."""
    config = read_config(path)
    refuse_unsafe(path, config)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise BackendError(f"{path}: no *.safetensors weights (qgate reads only safetensors)")
    tensors: dict[str, TensorEntry] = {}
    owner: dict[str, Path] = {}
    for file in files:
        for name, tensor in read_safetensors_header(file).items():
            if name in tensors:  # which copy would a loader take? refuse, as for GGUF
                raise BackendError(
                    f"{path}: tensor {name!r} is in both {owner[name].name} and {file.name}"
                )
            tensors[name], owner[name] = tensor, file
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


def tokenizer_vocab(path: Path) -> list[str] | None:
    """The tokenizer's tokens in id order, from ``tokenizer.json`` (model vocab + added tokens)."""
    file = path / "tokenizer.json"
    if not file.is_file():
        return None
    data = load_json(file)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(model, (dict, type(None))):
        raise BackendError(f"{file}: not a tokenizers file (expected an object with a 'model')")
    by_id: dict[int, str] = {}
    vocab = (model or {}).get("vocab")
    if isinstance(vocab, dict):
        by_id.update({_token_id(i, file): str(t) for t, i in vocab.items()})
    elif isinstance(vocab, list):  # unigram: [[piece, score], ...]
        for i, item in enumerate(vocab):
            if not isinstance(item, list) or not item:
                raise BackendError(f"{file}: model.vocab[{i}]: expected [piece, score]")
            by_id[i] = str(item[0])
    added_tokens = data.get("added_tokens") or []
    for added in added_tokens if isinstance(added_tokens, list) else []:
        if isinstance(added, dict) and "id" in added:
            by_id[_token_id(added["id"], file)] = str(added.get("content", ""))
    if not by_id:
        return None
    return [by_id.get(i, "") for i in range(max(by_id) + 1)]


def _token_id(value: Any, file: Path) -> int:
    """A token id of ``tokenizer.json``: the vocabulary list is as long as the largest id, so a
    hostile id of 10^15 would allocate (or hash) 10^15 entries."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_TOKEN_ID:
        raise BackendError(
            f"{file}: token id {_shown(value)} is not a whole number from 0 to {MAX_TOKEN_ID - 1}"
        )
    return value


def tokenizer_hash(tokens: list[str] | None) -> str | None:
    if tokens is None:
        return None
    digest = hashlib.sha256(TOKENIZER_FAMILY.encode())
    for token in tokens:
        digest.update(b"\x00" + token.encode("utf-8", errors="surrogatepass"))
    return digest.hexdigest()


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of the config (multimodal configs nest it)."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


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
    tokens = tokenizer_vocab(folder.path)
    file = folder.path / "config.json"
    vocab_size = _text_count(config, "vocab_size", file)
    experts = _text_count(config, "num_local_experts", file, minimum=0, maximum=MAX_EXPERTS)
    experts = experts or _text_count(config, "num_experts", file, minimum=0, maximum=MAX_EXPERTS)
    context_length = _text_count(config, "max_position_embeddings", file)
    template = folder.tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {str(t.get("name")): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str):
        chat_file = folder.path / "chat_template.jinja"
        template = _read_template(chat_file) if chat_file.is_file() else None
    identity = {"name": str(config.get("_name_or_path") or folder.path.name)}
    if config.get("model_type"):
        identity["model_type"] = str(config["model_type"])
    if config.get("transformers_version"):
        identity["transformers_version"] = str(config["transformers_version"])
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
        identity=identity,
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
    )


def _text_count(
    config: dict[str, Any],
    key: str,
    file: Path,
    *,
    minimum: int = 1,
    maximum: int = MAX_CONFIG_COUNT,
) -> int | None:
    """:func:`config_count` of the language model's ``key``: ``text_config``'s when the config
    nests one that has it (as :func:`text_config` merges them), else the top level's."""
    nested = config.get("text_config")
    if isinstance(nested, dict) and key in nested:
        return config_count(
            nested, key, file, minimum=minimum, maximum=maximum, where="text_config."
        )
    return config_count(config, key, file, minimum=minimum, maximum=maximum)


def _read_template(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BackendError(f"{file}: not UTF-8 text: {exc}") from None
