"""Weights through the backend: ``Backend.tensor_reader`` and the format-free comparison.

The GGUF reader must hand out exactly what :class:`qgate_gguf.weights.GGUFWeights` reads; the
float safetensors reader what the file holds (F32, F16, BF16), row by row; a quantized folder has
no reader. :func:`qgate.tensors.compare_tensors` works on any of them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from qgate.errors import BackendError
from qgate.tensors import compare_tensors

HAVE_GGUF = importlib.util.find_spec("gguf") is not None

#: a tensor of each float dtype the hf reader hands out: (dtype, shape, storage, values)
VALUES = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1  # exact in F16 and BF16


def _bf16(values: np.ndarray) -> bytes:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def write_float_folder(folder: Path, *, scale: float = 1.0, config: dict | None = None) -> Path:
    """A folder whose one safetensors file holds F32, F16 and BF16 tensors (written by hand:
    numpy has no bfloat16)."""
    values = VALUES * scale
    blobs = {
        "a.f32": ("F32", [2, 3, 4], values.astype("<f4").tobytes()),
        "b.f16": ("F16", [6, 4], values.reshape(6, 4).astype("<f2").tobytes()),
        "c.bf16": ("BF16", [24], _bf16(values.reshape(24))),
        "d.scalar": ("F32", [], np.float32(scale).astype("<f4").tobytes()),
    }
    header, data = {}, b""
    for name, (dtype, shape, blob) in blobs.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(blob)],
        }
        data += blob
    raw = json.dumps(header).encode()
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    (folder / "config.json").write_text(json.dumps({"vocab_size": 8, **(config or {})}))
    return folder


def hf_backend():  # type: ignore[no-untyped-def]
    from qgate_hf import HFBackend

    return HFBackend()


def test_float_folder_rows_are_the_stored_values(tmp_path: Path) -> None:
    folder = write_float_folder(tmp_path / "m")
    reader = hf_backend().tensor_reader(folder)
    assert reader is not None
    with reader:
        metas = {m.name: m for m in reader.tensors}
        assert [m.name for m in reader.tensors] == ["a.f32", "b.f16", "c.bf16", "d.scalar"]
        assert (metas["a.f32"].rows, metas["a.f32"].row_length) == (6, 4)
        assert (metas["c.bf16"].rows, metas["c.bf16"].row_length) == (1, 24)
        assert metas["b.f16"].type_name == "F16" and metas["b.f16"].shape == (6, 4)
        flat = VALUES.reshape(6, 4)
        for name in ("a.f32", "b.f16"):
            rows = reader.read_rows(name, np.array([5, 0, 1, 2]))
            assert rows.dtype == np.float32
            np.testing.assert_array_equal(rows, flat[[5, 0, 1, 2]])
        np.testing.assert_array_equal(
            reader.read_rows("c.bf16", np.array([0])), VALUES.reshape(1, 24)
        )
        np.testing.assert_array_equal(reader.read_rows("d.scalar", np.array([0])), [[1.0]])
        assert reader.read_rows("a.f32", np.array([], dtype=np.int64)).shape == (0, 4)
        with pytest.raises(BackendError, match=r"rows must be in \[0, 6\)"):
            reader.read_rows("a.f32", np.array([6]))
        with pytest.raises(BackendError, match="no tensor 'nope'"):
            reader.read_rows("nope", np.array([0]))


def test_float_folders_compare_and_quantized_folders_have_no_reader(tmp_path: Path) -> None:
    same = write_float_folder(tmp_path / "same")
    scaled = write_float_folder(tmp_path / "scaled", scale=2.0)
    backend = hf_backend()
    paths = [same, same, scaled]
    with contextlib.ExitStack() as stack:
        readers = [backend.tensor_reader(p) for p in paths]
        assert all(r is not None for r in readers)
        for reader in readers:
            stack.enter_context(reader)  # type: ignore[arg-type]
        result = {t.name: t for t in compare_tensors(readers, paths)}  # type: ignore[arg-type]
    for comparison in result.values():
        assert comparison.rel_error(0, 1) == 0 and comparison.cosine(0, 1) == pytest.approx(1)
        assert comparison.cosine(0, 2) == pytest.approx(1)  # the same direction...
        assert comparison.rel_error(2, 0) == pytest.approx(1)  # ...twice as long
    assert result["c.bf16"].types == ("BF16", "BF16", "BF16") and result["a.f32"].elements == 24
    quantized = write_float_folder(
        tmp_path / "awq", config={"quantization_config": {"quant_method": "awq", "bits": 4}}
    )
    assert backend.tensor_reader(quantized) is None


@pytest.mark.skipif(not HAVE_GGUF, reason="needs gguf: pip install -e '.[gguf]'")
def test_gguf_reader_matches_the_weights_module(tmp_path: Path) -> None:
    from qgate_gguf import GGUFBackend
    from qgate_gguf.weights import GGUFWeights, compare_files
    from tests.tiny_gguf import write_tiny_llama

    base = write_tiny_llama(tmp_path / "base.gguf", n_embd=64, n_ff=128, n_layers=1)
    tuned = write_tiny_llama(
        tmp_path / "tuned.gguf", n_embd=64, n_ff=128, n_layers=1, delta={"ffn": 0.05}
    )
    with GGUFBackend().tensor_reader(base) as reader, GGUFWeights(base) as weights:
        assert [m.name for m in reader.tensors] == [t.name for t in weights.header.tensors]
        up = next(m for m in reader.tensors if m.name == "blk.0.ffn_up.weight")
        assert (up.shape, up.rows, up.row_length, up.type_name) == ((64, 128), 128, 64, "F32")
        rows = np.array([0, 7, 127])
        np.testing.assert_array_equal(
            reader.read_rows(up.name, rows), weights.read_rows(up.name, rows)
        )
        with pytest.raises(BackendError, match=r"rows must be in \[0, 128\)"):
            reader.read_rows(up.name, np.array([128]))
    backend = GGUFBackend()
    with backend.tensor_reader(tuned) as a, backend.tensor_reader(base) as b:
        ours = compare_tensors([a, b], [tuned, base], max_elements=1024)
    theirs = compare_files([tuned, base], max_elements=1024)
    assert [t.name for t in ours] == [t.name for t in theirs]
    for mine, old in zip(ours, theirs, strict=True):
        assert mine.pairs[(0, 1)] == old.pairs[(0, 1)] and mine.elements == old.elements
    changed = {t.name for t in ours if t.rel_error(0, 1) > 0}
    assert changed == {"blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"}
