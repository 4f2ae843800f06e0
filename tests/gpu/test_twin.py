"""tests/gpu/twin.py's config fixes for exllamav2, on synthetic folders (no model, no GPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import twin


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_rope_theta_is_copied_to_the_top_level(tmp_path: Path) -> None:
    # transformers 5 (Qwen 2.5): one rope_parameters for every layer
    qwen = write_config(
        tmp_path / "qwen", {"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}
    )
    assert twin.add_top_level_rope(qwen) == {"rope_theta": 1e6}
    assert json.loads(qwen.read_text())["rope_theta"] == 1e6
    # Gemma 3: per layer type; exllamav2's rope_theta is the full-attention layers'
    gemma = write_config(
        tmp_path / "gemma",
        {
            "rope_parameters": {
                "full_attention": {"rope_theta": 1e6, "rope_type": "linear", "factor": 8.0},
                "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"},
            }
        },
    )
    added = twin.add_top_level_rope(gemma)
    assert added["rope_theta"] == 1e6
    assert added["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}
    # an existing top-level value is left alone
    old = write_config(tmp_path / "old", {"rope_theta": 5e5})
    assert twin.add_top_level_rope(old) == {}
    assert json.loads(old.read_text()) == {"rope_theta": 5e5}


def test_bos_is_dropped_only_when_the_gguf_adds_none(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|endoftext|>"}))
    assert not twin.match_bos(tmp_path, True)
    assert not twin.match_bos(tmp_path, None)
    assert twin.match_bos(tmp_path, False)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["bos_token"] is None


def test_exl2_view_renames_gemma3_and_links_the_rest(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    gemma = tmp_path / "gemma"
    write_config(
        gemma,
        {
            "architectures": ["Gemma3ForCausalLM"],
            "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        },
    )
    save_file({"model.norm.weight": torch.ones(4)}, str(gemma / "model.safetensors"))
    (gemma / "tokenizer.json").write_text("{}")
    view = twin.exl2_view(gemma, tmp_path / "gemma-view")
    assert view == {
        "architecture": "Gemma3ForConditionalGeneration",
        "renamed": True,
        "prefix": "language_model.",
    }
    config = json.loads((tmp_path / "gemma-view" / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    assert config["sliding_window_pattern"] == 6
    tensors = load_file(str(tmp_path / "gemma-view" / "model.safetensors"))
    assert list(tensors) == ["language_model.model.norm.weight"]
    assert (tmp_path / "gemma-view" / "tokenizer.json").exists()

    qwen = tmp_path / "qwen"
    write_config(qwen, {"architectures": ["Qwen2ForCausalLM"]})
    assert twin.exl2_view(qwen, tmp_path / "qwen-view") == {
        "architecture": "Qwen2ForCausalLM",
        "renamed": False,
    }
    assert (tmp_path / "qwen-view" / "config.json").is_symlink()
