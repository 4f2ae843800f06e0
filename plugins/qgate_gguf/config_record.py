"""A GGUF file's hyperparameters as llama.cpp reads them: a :class:`~qgate.backend.ModelConfig`.

Keys live under the architecture's prefix (``gemma3.rope.freq_base``). A key a converter lost is
not an error to llama.cpp: it runs with its default (RoPE base 10000), so the record holds that
default and says so in ``readings``, and a parity check can name the difference from the
reference. Numbers GGUF stores as float32 are rounded to 7 significant digits (``1e-06``, not
``9.99999997e-07``), so that they compare with ``config.json``'s.
"""

from __future__ import annotations

from typing import Any

from qgate.backend import ModelConfig
from qgate_gguf.reader import ArraySummary, GGUFHeader

#: llama.cpp's RoPE base when ``{arch}.rope.freq_base`` is absent
LLAMA_CPP_ROPE_BASE = 10000.0

#: tensors that carry a RoPE scaling of their own (frequency factors baked in by the converter)
SCALING_TENSORS = {"rope_freqs.weight": "llama3", "rope_factors_long.weight": "longrope"}


def config_record(header: GGUFHeader) -> ModelConfig:
    """The normalised hyperparameters of a GGUF file, as llama.cpp will run it."""
    fields = header.fields
    arch = str(fields.get("general.architecture", "unknown"))

    def get(key: str) -> Any:
        return fields.get(f"{arch}.{key}")

    names = {t.name for t in header.tensors}
    record = ModelConfig(
        runtime="llama.cpp",
        context_length=_int(get("context_length")),
        rope_base=_float(get("rope.freq_base")),
        rope_base_local=_float(get("rope.freq_base_swa")),
        rope_scaling=_scaling(get("rope.scaling.type"), names),
        rope_scaling_factor=_float(get("rope.scaling.factor")),
        rope_original_context=_int(get("rope.scaling.original_context_length")),
        rope_dimensions=_int(get("rope.dimension_count")),
        norm_eps=_float(get("attention.layer_norm_rms_epsilon"))
        or _float(get("attention.layer_norm_epsilon")),
        layers=_int(get("block_count")),
        hidden_size=_int(get("embedding_length")),
        feed_forward=_int(get("feed_forward_length")),
        heads=_int(get("attention.head_count")),
        kv_heads=_int(get("attention.head_count_kv")),
        head_dim=_int(get("attention.key_length")),
        sliding_window=_int(get("attention.sliding_window")),
        vocab_size=_int(get("vocab_size")) or _count(fields.get("tokenizer.ggml.tokens")),
        tied_embeddings="output.weight" not in names if "token_embd.weight" in names else None,
    )
    if record.head_dim is None and record.hidden_size and record.heads:
        record.head_dim = record.hidden_size // record.heads
    if record.rope_base is None:
        record.rope_base = LLAMA_CPP_ROPE_BASE
        record.readings["rope_base"] = (
            f"{arch}.rope.freq_base is absent from the file: llama.cpp runs with its default "
            f"{LLAMA_CPP_ROPE_BASE:g}"
        )
    for tensor, kind in SCALING_TENSORS.items():
        if tensor in names and get("rope.scaling.type") is None:
            record.readings["rope_scaling"] = f"{kind}: frequency factors stored as {tensor}"
    return record


def _scaling(value: Any, tensors: set[str]) -> str:
    if isinstance(value, str) and value:
        return value.lower()
    return next((kind for name, kind in SCALING_TENSORS.items() if name in tensors), "none")


def _first(value: Any) -> Any:
    """A per-layer array's first value (head counts may be stored per layer)."""
    if isinstance(value, ArraySummary):
        return value.values[0] if value.values else None
    return value


def _int(value: Any) -> int | None:
    value = _first(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _float(value: Any) -> float | None:
    value = _first(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(f"{float(value):.7g}")


def _count(value: Any) -> int | None:
    return value.count if isinstance(value, ArraySummary) else None
