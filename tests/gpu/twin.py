"""The Hugging Face twin of a GGUF model: the same weights as a safetensors folder.

transformers loads the GGUF (``gguf_file=``; it dequantizes every tensor to float32), the
quantization marker it leaves on the model is removed (``save_pretrained`` refuses a model loaded
from GGUF otherwise), and the model is saved with its tokenizer in ``--dtype`` (float16 by
default: a Q4_K_M's dequantized weights are exactly what llama.cpp's F16 requantization holds).

Three fixes for the tools downstream, all recorded in ``twin.json``:

- The tokenizer adds a BOS exactly when the GGUF does (``tokenizer.ggml.add_bos_token``): for
  Qwen 2.5 the GGUF adds none, transformers' conversion names ``<|endoftext|>`` as BOS, and the
  twin's ``tokenizer_config.json`` gets ``bos_token: null`` as Qwen's own release has, or qgate
  would refuse the pair (the twin's sequences would start with a token the GGUF's do not).

- transformers 5 writes RoPE settings only as ``rope_parameters: {rope_theta: ...}`` (per layer
  type for Gemma 3); exllamav2 0.3.2 reads a top-level ``rope_theta`` and otherwise uses 10,000
  (1e6 for Gemma 3). The twin gets a top-level ``rope_theta`` copied from ``rope_parameters``
  (the full-attention layers' value), which transformers reads back as the same setting.
- ``--exl2-view DIR`` also writes the folder exllamav2 0.3.2 can convert: it knows Gemma 3 only
  as ``Gemma3ForConditionalGeneration`` (weights under ``language_model.``) and would load a
  ``Gemma3ForCausalLM`` as a Llama. For an architecture it knows the view is the twin itself
  (files linked).

    python3 tests/gpu/twin.py MODEL.gguf OUT_DIR [--dtype float16] [--exl2-view DIR]
        [--tokenizer-from DIR]

``--tokenizer-from DIR`` replaces the converted tokenizer with ``tokenizer.json`` and
``tokenizer_config.json`` from DIR (a twin built where transformers converts it right): on the GPU
machine transformers 5.17 turns Gemma 3's GGUF tokenizer into a Unigram model that splits text
differently from llama.cpp (qgate refuses the pair), while 5.24 converts it exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

#: transformers architecture -> the name exllamav2 0.3.2 knows it by, and the weight prefix it expects
EXL2_RENAMES = {"Gemma3ForCausalLM": ("Gemma3ForConditionalGeneration", "language_model.")}


def full_attention_rope(config: dict[str, Any]) -> dict[str, Any] | None:
    """The RoPE parameters of the full-attention layers (transformers 5 ``rope_parameters``)."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        return None
    if "rope_theta" in params:
        return params
    for key in ("full_attention", "global"):
        if isinstance(params.get(key), dict):
            return params[key]
    return None


def add_top_level_rope(config_path: Path) -> dict[str, Any]:
    """Write ``rope_theta`` (and a linear ``rope_scaling``) at the top level for exllamav2."""
    config = json.loads(config_path.read_text())
    rope = full_attention_rope(config)
    added: dict[str, Any] = {}
    if rope is not None and "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = added["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type") == "linear" and "rope_scaling" not in config:
            config["rope_scaling"] = added["rope_scaling"] = {
                "rope_type": "linear",
                "factor": rope["factor"],
            }
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    return added


def exl2_view(twin: Path, view: Path) -> dict[str, Any]:
    """A copy of the twin that exllamav2 0.3.2 recognises (see the module docstring)."""
    config = json.loads((twin / "config.json").read_text())
    (arch,) = config["architectures"]
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    if arch not in EXL2_RENAMES:
        for item in twin.iterdir():
            os.symlink(item.resolve(), view / item.name)
        return {"architecture": arch, "renamed": False}
    from safetensors.torch import load_file, save_file

    new_arch, prefix = EXL2_RENAMES[arch]
    for item in twin.iterdir():
        if item.suffix == ".safetensors":
            tensors = load_file(str(item))
            save_file(
                {prefix + name: t for name, t in tensors.items()},
                str(view / item.name),
                metadata={"format": "pt"},
            )
        elif item.name == "model.safetensors.index.json":
            index = json.loads(item.read_text())
            index["weight_map"] = {prefix + k: v for k, v in index["weight_map"].items()}
            (view / item.name).write_text(json.dumps(index, indent=2))
        elif item.name != "config.json":
            shutil.copy(item, view / item.name)
    config["architectures"] = [new_arch]
    # exllamav2 reads the text model's settings at the top level or under text_config
    layer_types = config.get("layer_types") or []
    if "sliding_window_pattern" not in config and "full_attention" in layer_types:
        config["sliding_window_pattern"] = layer_types.index("full_attention") + 1
    (view / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"architecture": new_arch, "renamed": True, "prefix": prefix}


def gguf_add_bos(gguf: Path) -> bool | None:
    """``tokenizer.ggml.add_bos_token`` of a GGUF, or None when the file does not say."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.add_bos_token")
    if field is None:
        return None
    return bool(field.parts[field.data[0]][0])


def match_bos(out: Path, add_bos: bool | None) -> bool:
    """Drop the saved tokenizer's BOS when the GGUF adds none; True if it was dropped."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if add_bos is not False or config.get("bos_token") is None:
        return False
    config["bos_token"] = None
    path.write_text(json.dumps(config, indent=2) + "\n")
    return True


def build_twin(gguf: Path, out: Path, dtype_name: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    dtype = getattr(torch, dtype_name)
    kwargs = {"gguf_file": gguf.name}
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), dtype=torch.float32, **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    loaded = time.perf_counter() - started
    # save_pretrained refuses a model loaded from GGUF while it carries a quantization marker
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    if out.exists():
        shutil.rmtree(out)
    model.to(dtype).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    summary = {
        "source": str(gguf),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": dtype_name,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "seconds_load": round(loaded, 1),
        "seconds_total": round(time.perf_counter() - started, 1),
        "added_for_exllamav2": add_top_level_rope(out / "config.json"),
        "gguf_add_bos_token": (add_bos := gguf_add_bos(gguf)),
        "bos_token_dropped": match_bos(out, add_bos),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--exl2-view", type=Path)
    parser.add_argument("--tokenizer-from", type=Path)
    args = parser.parse_args()
    summary = build_twin(args.gguf.resolve(), args.out, args.dtype)
    if args.tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(args.tokenizer_from / name, args.out / name)
        summary["tokenizer_from"] = str(args.tokenizer_from)
    if args.exl2_view is not None:
        summary["exl2_view"] = exl2_view(args.out, args.exl2_view)
    (args.out / "twin.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
