"""The exl2 and awq backends: metadata of synthetic folders (CPU), loading where it can run.

The folders are written here with safetensors' numpy API: tensor names, dtypes and shapes as
exllamav2's converter and AutoAWQ write them, random contents. Loading needs exllamav2 and a
CUDA GPU (exl2) or gptqmodel (awq): tests/gpu/run_gpu.sh runs the real thing on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from qgate.backend import BackendOptions
from qgate.errors import BackendError, MissingExtraError

HAVE_SAFETENSORS = importlib.util.find_spec("safetensors") is not None
pytestmark = pytest.mark.skipif(
    not HAVE_SAFETENSORS, reason="needs safetensors to write the folders: pip install safetensors"
)

HIDDEN, INTER, VOCAB, LAYERS = 64, 128, 300, 2
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
    "max_position_embeddings": 2048,
    "vocab_size": VOCAB,
}
LINEARS = {  # name -> (in, out)
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (HIDDEN, INTER),
    "mlp.up_proj": (HIDDEN, INTER),
    "mlp.down_proj": (INTER, HIDDEN),
}


def _dense(rng: np.random.Generator) -> dict[str, np.ndarray]:
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((VOCAB, HIDDEN)).astype(np.float16),
        "model.norm.weight": np.ones(HIDDEN, dtype=np.float16),
    }
    for layer in range(LAYERS):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{layer}.{norm}.weight"] = np.ones(HIDDEN, dtype=np.float16)
    return tensors


def write_exl2(folder: Path, bits: int = 4, *, with_config: bool = True) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    tensors = _dense(rng)
    linears = {f"model.layers.{i}.{n}": s for i in range(LAYERS) for n, s in LINEARS.items()}
    linears["lm_head"] = (HIDDEN, VOCAB)
    for prefix, (n_in, n_out) in linears.items():
        tensors[f"{prefix}.q_weight"] = rng.integers(0, 2**31, (n_in * bits // 32, n_out)).astype(
            np.int32
        )
        tensors[f"{prefix}.q_scale"] = rng.integers(0, 2**31, (n_in // 32, n_out // 8)).astype(
            np.int32
        )
        tensors[f"{prefix}.q_scale_max"] = np.ones(n_in // 32, dtype=np.float16)
        tensors[f"{prefix}.q_groups"] = np.array([bits, 0], dtype=np.int16)
        tensors[f"{prefix}.q_invperm"] = np.arange(n_in, dtype=np.int16)
    save_file(tensors, str(folder / "output.safetensors"))
    config = dict(CONFIG)
    if with_config:
        config["quantization_config"] = {
            "quant_method": "exl2",
            "version": "0.3.2",
            "bits": float(bits),
            "head_bits": 6,
            "calibration": {"rows": 115, "length": 2048, "dataset": "(default)"},
        }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_awq(folder: Path, bits: int = 4, group: int = 32) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    tensors = _dense(rng)
    tensors["lm_head.weight"] = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float16)
    pack = 32 // bits
    for layer in range(LAYERS):
        for name, (n_in, n_out) in LINEARS.items():
            prefix = f"model.layers.{layer}.{name}"
            tensors[f"{prefix}.qweight"] = np.zeros((n_in, n_out // pack), dtype=np.int32)
            tensors[f"{prefix}.qzeros"] = np.zeros((n_in // group, n_out // pack), dtype=np.int32)
            tensors[f"{prefix}.scales"] = np.ones((n_in // group, n_out), dtype=np.float16)
    save_file(tensors, str(folder / "model.safetensors"))
    config = dict(CONFIG)
    config["quantization_config"] = {
        "quant_method": "awq",
        "bits": bits,
        "group_size": group,
        "version": "gemm",
        "zero_point": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _linear_params() -> int:
    per_layer = sum(i * o for i, o in LINEARS.values())
    return LAYERS * per_layer


DENSE_PARAMS = VOCAB * HIDDEN + HIDDEN + LAYERS * 2 * HIDDEN


def exl2_backend():
    from qgate_exl2 import EXL2Backend

    return EXL2Backend()


def awq_backend():
    from qgate_awq import AWQBackend

    return AWQBackend()


def test_exl2_metadata(tmp_path):
    folder = write_exl2(tmp_path / "m-exl2-4.0")
    assert exl2_backend().detect(folder)
    info = exl2_backend().inspect(folder)
    assert info.format == "exl2"
    assert info.architecture == "LlamaForCausalLM"
    assert info.file_type == "EXL2_4bpw"
    assert info.parameter_count == DENSE_PARAMS + _linear_params() + HIDDEN * VOCAB
    # 4-bit weights plus scales, group map and permutation: a little over 4 bits per weight
    assert 4.0 < info.extra["exl2_linear_bits_per_weight"] < 5.5
    assert info.extra["exl2_head_bits"] == 6
    assert info.extra["exl2_calibration"]["rows"] == 115
    assert info.tensor_type_by_name["model.layers.0.mlp.up_proj.weight"].startswith("EXL2_4")
    assert info.tensor_type_by_name["model.embed_tokens.weight"] == "F16"
    assert info.context_length == 2048 and info.vocab_size == VOCAB
    assert 4.0 < info.bits_per_weight < 16.0


def test_exl2_detected_from_tensor_names_without_a_config_marker(tmp_path):
    from qgate_hf import HFBackend

    folder = write_exl2(tmp_path / "old-exl2", with_config=False)
    assert exl2_backend().detect(folder)
    assert not HFBackend().detect(folder)  # the hf backend leaves it alone
    assert exl2_backend().inspect(folder).file_type == "EXL2"


def test_exl2_lower_bits_give_fewer_bits_per_weight(tmp_path):
    four = exl2_backend().inspect(write_exl2(tmp_path / "four", bits=4))
    two = exl2_backend().inspect(write_exl2(tmp_path / "two", bits=2))
    assert two.extra["exl2_linear_bits_per_weight"] < four.extra["exl2_linear_bits_per_weight"]


def test_exl2_inspect_from_the_cli(qgate, tmp_path):
    folder = write_exl2(tmp_path / "cli-exl2")
    result = qgate("inspect", folder, "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["format"] == "exl2"


def test_exl2_refuses_pickles_and_non_exl2(tmp_path):
    folder = write_exl2(tmp_path / "pickled")
    (folder / "model.pt").write_bytes(b"\x80")
    with pytest.raises(BackendError, match="never unpickles"):
        exl2_backend().inspect(folder)
    awq = write_awq(tmp_path / "awq")
    assert not exl2_backend().detect(awq)
    with pytest.raises(BackendError, match="not an EXL2 model"):
        exl2_backend().inspect(awq)


def test_exl2_load_needs_cuda_and_exllamav2(tmp_path):
    folder = write_exl2(tmp_path / "load")
    torch_missing = importlib.util.find_spec("torch") is None
    if not torch_missing:
        import torch

        if torch.cuda.is_available() and importlib.util.find_spec("exllamav2"):
            pytest.skip("a CUDA GPU and exllamav2 are here: tests/gpu/run_gpu.sh loads real EXL2")
    with pytest.raises((BackendError, MissingExtraError)) as err:
        exl2_backend().load(folder, BackendOptions(n_ctx=64))
    assert "CUDA GPU" in str(err.value) or "qgate-llm[exl2]" in str(err.value)


def test_exl2_unsupported_cache_type_is_refused(tmp_path):
    pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0")
    folder = write_exl2(tmp_path / "cache")
    with pytest.raises(BackendError, match="KV cache type"):
        exl2_backend().load(folder, BackendOptions(n_ctx=64, kv_cache="iq4_nl"))


def test_awq_metadata(tmp_path):
    folder = write_awq(tmp_path / "m-awq")
    assert awq_backend().detect(folder)
    assert not exl2_backend().detect(folder)
    info = awq_backend().inspect(folder)
    assert info.format == "awq"
    assert info.file_type == "AWQ_W4_G32"
    assert info.extra["awq_bits"] == 4 and info.extra["awq_group_size"] == 32
    assert info.extra["awq_version"] == "gemm"
    assert info.parameter_count == DENSE_PARAMS + _linear_params() + VOCAB * HIDDEN
    # 4-bit weights + fp16 scales and 4-bit zeros per group of 32: 4 + 16/32 + 4/32 bits
    assert info.extra["awq_linear_bits_per_weight"] == pytest.approx(4.625)
    assert info.tensor_type_by_name["model.layers.1.mlp.down_proj.weight"] == "AWQ_W4_G32"
    assert info.tensor_type_by_name["lm_head.weight"] == "F16"


def test_awq_refuses_other_formats(tmp_path):
    folder = write_exl2(tmp_path / "exl2")
    assert not awq_backend().detect(folder)
    with pytest.raises(BackendError, match="not an AWQ model"):
        awq_backend().inspect(folder)


def test_awq_load_needs_gptqmodel(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch: pip install torch==2.13.0")
    if importlib.util.find_spec("gptqmodel") is not None:
        pytest.skip("gptqmodel is installed: tests/gpu/run_gpu.sh loads a real AWQ model")
    folder = write_awq(tmp_path / "load")
    with pytest.raises(MissingExtraError, match="gptqmodel"):
        awq_backend().load(folder, BackendOptions(n_ctx=64, extra={"device": "cpu"}))


def _rewrite(folder: Path, change) -> None:
    """Load the folder's one safetensors file, let ``change`` edit its tensors, write it back."""
    from safetensors.numpy import load_file, save_file

    (file,) = folder.glob("*.safetensors")
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


def test_tensor_scan_names_a_nan_scale_of_an_awq_quant_and_a_zeroed_norm_of_an_exl2(tmp_path):
    awq = write_awq(tmp_path / "awq")
    scales = "model.layers.1.mlp.up_proj.scales"

    def poison(tensors):
        tensors[scales] = tensors[scales].copy()
        tensors[scales][0, :3] = [np.nan, np.inf, -np.inf]

    _rewrite(awq, poison)
    faulty = {h.name: h for h in awq_backend().scan_tensors(awq) if not h.healthy}
    assert list(faulty) == [scales]
    assert faulty[scales].non_finite == 3
    assert faulty[scales].values == HIDDEN // 32 * INTER  # every float16 scale looked at

    exl2 = write_exl2(tmp_path / "exl2")
    norm = "model.layers.0.input_layernorm.weight"
    _rewrite(exl2, lambda tensors: tensors.__setitem__(norm, np.zeros(HIDDEN, np.float16)))
    health = {h.name: h for h in exl2_backend().scan_tensors(exl2)}
    assert [name for name, h in health.items() if not h.healthy] == [norm]
    assert health[norm].all_zero
    # packed integer codes are only read, never judged: no value of them can be wrong alone
    q_weight = health["model.layers.0.mlp.up_proj.q_weight"]
    assert q_weight.healthy and q_weight.values == 0


def test_tensor_scan_finds_a_tensor_stored_short_under_the_next_one(tmp_path):
    import struct

    folder = tmp_path / "overlap"
    folder.mkdir()
    header = {
        "a.weight": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
        "b.weight": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]},
    }
    raw = json.dumps(header).encode()
    data = np.ones(6, np.float16).tobytes()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    from qgate_hf import HFBackend

    health = {h.name: h for h in HFBackend().scan_tensors(folder)}
    assert "4 bytes short" in health["a.weight"].problem
    assert health["b.weight"].healthy


def test_exllamav2_runs_an_fp16_folder_for_the_runtime_floor_but_no_other_quant(tmp_path):
    from safetensors.numpy import save_file

    dense = tmp_path / "fp16"
    dense.mkdir()
    rng = np.random.default_rng(0)
    tensors = _dense(rng)
    tensors["lm_head.weight"] = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float16)
    save_file(tensors, str(dense / "model.safetensors"))
    (dense / "config.json").write_text(json.dumps(CONFIG))
    exl2 = exl2_backend()
    assert exl2.detect(dense) == 0  # not an EXL2 quant ...
    assert exl2.runs_full_precision(dense)  # ... but exllamav2 runs it unquantized
    assert exl2.runs_full_precision(write_exl2(tmp_path / "exl2"))
    assert not exl2.runs_full_precision(write_awq(tmp_path / "awq"))
    # the default: a backend runs only its own format
    assert not awq_backend().runs_full_precision(dense)
