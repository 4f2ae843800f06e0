"""``config.json``: read, refused when unsafe, and its counts checked before anything uses them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qgate.errors import BackendError
from qgate_transformers.jsonfile import json_type, load_json, shown

#: files that need pickle to read: never opened, and a folder holding one is refused
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: the largest vocabulary or context length a config may declare: far above any real model,
#: far below sizes whose arithmetic (or allocation) would hang or overflow downstream
MAX_CONFIG_COUNT = 1 << 32
#: the largest number of experts a config may declare
MAX_EXPERTS = 1 << 16
#: integers in ``quantization_config`` beyond this are absurd, and ``float()`` of them overflows
_MAX_QUANT_INT = 1 << 53


def text_count(
    config: dict[str, Any],
    key: str,
    file: Path,
    *,
    minimum: int = 1,
    maximum: int = MAX_CONFIG_COUNT,
) -> int | None:
    """The language model's ``key`` as a whole number in ``[minimum, maximum]``, None when
    absent or null: ``text_config``'s when the config nests one that has it (multimodal configs
    do), else the top level's.

    Anything else (``1e999``, ``NaN``, ``-5``, ``3.5``, ``"32000"``, ``true``, a list) is a
    :class:`BackendError` naming the file and the key: a count that is not a count must not
    reach ``int()`` (OverflowError on infinity) or the checks (a vocabulary of 10^30 tokens).
    """
    nested = config.get("text_config")
    section, where = (
        (nested, "text_config.") if isinstance(nested, dict) and key in nested else (config, "")
    )
    value = section.get(key)
    if value is None:
        return None
    problem = f"{file}: {where}{key}: expected a whole number from {minimum} to {maximum}, got"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BackendError(f"{problem} {json_type(value)} {shown(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        what = "a non-finite number" if not math.isfinite(value) else "a fraction"
        raise BackendError(f"{problem} {what} ({value!r})")
    if not minimum <= value <= maximum:
        raise BackendError(f"{problem} {shown(value)}")
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
            raise BackendError(f"{file}: {path}: absurd number {shown(value)}")


def read_config(path: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as an object, its ``quantization_config`` numbers checked."""
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
