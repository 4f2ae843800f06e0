"""``config.json`` as a normalised :class:`~qgate.backend.ModelConfig`, read as the folder's
runtime will read it.

transformers 4 writes ``rope_theta`` and ``rope_scaling`` at the top level (``rope_local_base_freq``
for Gemma 3's sliding layers); transformers 5 writes ``rope_parameters`` instead, either flat
(``{"rope_theta": 1e6, "rope_type": "default"}``) or per layer type (``{"full_attention": {...},
"sliding_attention": {...}}``). transformers reads both. exllamav2 (0.3) reads only the top-level
keys: on a transformers 5 export it finds no ``rope_theta`` and runs with RoPE base 10000
whatever the model was trained with, so an EXL2 folder's record is exllamav2's reading, with the
reason in ``readings`` for the parity check to show.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from qgate.backend import ModelConfig
from qgate.errors import BackendError
from qgate_transformers.config import text_count
from qgate_transformers.jsonfile import json_type, shown

#: the runtime that runs each folder format, whose reading of config.json the record follows
RUNTIMES = {"hf": "transformers", "awq": "transformers", "exl2": "exllamav2"}

#: exllamav2's RoPE base when config.json has no top-level ``rope_theta``
EXLLAMAV2_ROPE_BASE = 10000.0

_EPS_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", "norm_eps")
#: rope types that mean "no scaling"
_UNSCALED = {"default", "none", ""}


def config_record(config: dict[str, Any], file: Path, fmt: str) -> ModelConfig:
    """The hyperparameters of ``config`` (the contents of ``file``) as the runtime of ``fmt``
    reads them.

    :raises BackendError: for a value of the wrong kind (a RoPE base that is not a positive
        finite number, a count that is not a whole number), naming the file and the key.
    """
    record = transformers_reading(config, file)
    if RUNTIMES.get(fmt) == "exllamav2":
        return exllamav2_reading(config, file, record)
    return record


def transformers_reading(config: dict[str, Any], file: Path) -> ModelConfig:
    """What transformers makes of ``config``: ``rope_parameters`` and the older keys alike."""
    text = _text_section(config)

    def count(key: str, minimum: int = 1) -> int | None:
        return text_count(config, key, file, minimum=minimum)

    full, local = _rope_sections(text)
    heads = count("num_attention_heads") or count("n_head")
    hidden = count("hidden_size") or count("n_embd")
    record = ModelConfig(
        runtime="transformers",
        context_length=count("max_position_embeddings"),
        rope_base=_positive(full, "rope_theta", file) or _positive(text, "rope_theta", file),
        rope_base_local=_positive(local, "rope_theta", file)
        or _positive(text, "rope_local_base_freq", file),
        norm_eps=next(
            (v for v in (_positive(text, k, file) for k in _EPS_KEYS) if v is not None), None
        ),
        layers=count("num_hidden_layers") or count("n_layer"),
        hidden_size=hidden,
        feed_forward=count("intermediate_size") or count("n_inner"),
        heads=heads,
        kv_heads=count("num_key_value_heads") or heads,
        head_dim=count("head_dim") or (hidden // heads if hidden and heads else None),
        sliding_window=count("sliding_window")
        if text.get("use_sliding_window", True) is not False
        else None,
        vocab_size=count("vocab_size"),
        tied_embeddings=_bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings"))),
    )
    _set_scaling(record, full if full else text.get("rope_scaling"), file)
    factor = _positive(text, "partial_rotary_factor", file)
    if factor is not None and record.head_dim:
        record.rope_dimensions = int(record.head_dim * factor)
    return record


def exllamav2_reading(config: dict[str, Any], file: Path, base: ModelConfig) -> ModelConfig:
    """``base`` (transformers' reading) changed where exllamav2 reads ``config`` otherwise: it
    knows only the top-level ``rope_theta`` and ``rope_scaling``."""
    text = _text_section(config)
    record = replace(base, runtime="exllamav2", readings=dict(base.readings))
    theta = _positive(text, "rope_theta", file)
    if theta is None:
        record.rope_base = EXLLAMAV2_ROPE_BASE
        written = (
            f"config.json has it only as rope_parameters.rope_theta = {base.rope_base:g} "
            "(transformers 5), which exllamav2 does not read"
            if base.rope_base is not None
            else "config.json has no rope_theta"
        )
        record.readings["rope_base"] = (
            f"exllamav2 reads the RoPE base from rope_theta; {written}: it runs with its default "
            f"{EXLLAMAV2_ROPE_BASE:g}"
        )
    scaling = text.get("rope_scaling")
    if not isinstance(scaling, dict) and base.rope_scaling not in (None, "none"):
        record.rope_scaling, record.rope_scaling_factor = "none", None
        record.readings["rope_scaling"] = (
            f"exllamav2 reads rope_scaling; config.json has the {base.rope_scaling} scaling only "
            "in rope_parameters (transformers 5): exllamav2 runs unscaled"
        )
    return record


def _text_section(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's settings: ``text_config`` over the top level, for multimodal configs."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


def _rope_sections(text: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """transformers 5's ``rope_parameters``: (full attention's, sliding attention's); empty
    dicts where the config has none."""
    params = text.get("rope_parameters")
    if not isinstance(params, dict):
        return {}, {}
    if any(isinstance(v, dict) for v in params.values()):  # per layer type
        full = params.get("full_attention")
        local = params.get("sliding_attention")
        return (full if isinstance(full, dict) else {}), (local if isinstance(local, dict) else {})
    return params, {}


def _set_scaling(record: ModelConfig, section: Any, file: Path) -> None:
    if not isinstance(section, dict):
        record.rope_scaling = "none"
        return
    kind = str(section.get("rope_type") or section.get("type") or "").lower()
    record.rope_scaling = "none" if kind in _UNSCALED else kind
    if record.rope_scaling != "none":
        record.rope_scaling_factor = _positive(section, "factor", file)
        original = section.get("original_max_position_embeddings")
        if isinstance(original, int) and not isinstance(original, bool) and original > 0:
            record.rope_original_context = original


def _positive(section: dict[str, Any], key: str, file: Path) -> float | None:
    """``section[key]`` as a positive finite number; None when absent or null.

    :raises BackendError: for anything else, naming the file and key.
    """
    value = section.get(key)
    if value is None:
        return None
    number = _as_float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise BackendError(
            f"{file}: {key}: expected a positive finite number, got {json_type(value)} "
            f"{shown(value)}"
        )
    return number


def _as_float(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (an integer too large for a float
    included: ``float(10**400)`` overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
