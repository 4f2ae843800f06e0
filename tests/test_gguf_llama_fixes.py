"""Two fixes in the GGUF backend found on the GPU run (docs/gpu.md).

A GGUF whose tokenizer adds no BOS (``tokenizer.ggml.add_bos_token = false``, as Qwen 2.5's):
its chunks must not start with BOS, as llama-perplexity's do not, so the GGUF and the Hugging
Face folder made from it (whose tokenizer has no BOS) cut the same chunks. And the threaded
reduction of a subject pass (the default with layers on a GPU) must change no figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qgate.backend import BackendOptions
from qgate.datasets import Dataset, make_chunks
from tests.conftest import needs_llama_cpp

pytestmark = [needs_llama_cpp, pytest.mark.llama_cpp]

TEXT = "The quick brown fox jumps over the lazy dog. " * 40


def without_bos(source: Path, target: Path) -> Path:
    """``source`` with ``tokenizer.ggml.add_bos_token = false`` (gguf-new-metadata's copy)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(source))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE]
    writer = gguf.GGUFWriter(str(target), arch=bytes(arch.parts[arch.data[0]]).decode())
    flag = MetadataDetails(gguf.GGUFValueType.BOOL, False)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.ADD_BOS: flag}, [])
    return target


def chunks_of(path: Path):  # type: ignore[no-untyped-def]
    from qgate_gguf import GGUFBackend

    model = GGUFBackend().load(path, BackendOptions(n_ctx=64, threads=1))
    try:
        dataset = Dataset(domain="en", text=TEXT, digest="", source="test")
        tokens = model.tokenize(TEXT, add_bos=True)
        chunks = make_chunks(
            lambda t: model.tokenize(t, add_bos=True),
            model.bos_token,
            dataset,
            n_ctx=64,
            max_chunks=2,
        )
        return model.bos_token, tokens, chunks
    finally:
        model.close()


def test_chunks_start_with_bos_only_when_the_model_adds_one(tmp_path: Path) -> None:
    from tests.tiny_gguf import write_tiny_llama

    with_bos = write_tiny_llama(tmp_path / "bos.gguf", n_embd=64, n_ff=128, n_layers=1)
    bos, tokens, chunks = chunks_of(with_bos)
    assert bos == 1 and tokens[0] == 1
    assert (chunks[:, 0] == 1).all()

    no_bos = without_bos(with_bos, tmp_path / "no-bos.gguf")
    bos, tokens, chunks = chunks_of(no_bos)
    assert bos is None
    assert tokens[0] != 1  # llama.cpp itself adds none
    assert (chunks[:, 0] != 1).all()  # and no chunk is given one
    assert chunks.reshape(-1).tolist() == tokens[: chunks.size]


def test_threaded_reduction_gives_the_same_scores(tmp_path: Path) -> None:
    """``extra.reduce_threads`` (the default with layers on a GPU) changes no figure."""
    from qgate_gguf import GGUFBackend
    from qgate_gguf.llama import reduce_threads
    from tests.tiny_gguf import write_tiny_llama

    assert reduce_threads(BackendOptions()) == 1  # CPU: llama.cpp's threads are the bottleneck
    assert reduce_threads(BackendOptions(gpu_layers=-1, threads=4)) == 4
    assert reduce_threads(BackendOptions(extra={"reduce_threads": 3})) == 3
    path = write_tiny_llama(tmp_path / "m.gguf", n_embd=64, n_ff=128, n_layers=1)
    tokens = [1, *range(3, 259)] * 2  # 514 tokens: several blocks of 64 scored rows
    gather = np.arange(256 * 5, dtype=np.int64).reshape(256, 5) % 259
    scores = []
    for threads in (1, 4):
        options = BackendOptions(n_ctx=512, threads=1, extra={"reduce_threads": threads})
        model = GGUFBackend().load(path, options)
        try:
            scores.append(model.score(tokens[:512], start=256, top_k=1, gather=gather))
        finally:
            model.close()
    one, four = scores
    assert len(one.target_logprob) == 256
    np.testing.assert_array_equal(one.target_logprob, four.target_logprob)
    np.testing.assert_array_equal(one.top_ids, four.top_ids)
    np.testing.assert_array_equal(one.gathered_logprobs, four.gathered_logprobs)
