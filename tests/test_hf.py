"""The hf backend on a tiny Llama built here with transformers (random weights, fixed seed).

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a paragraph, the model is
initialised from a seed and saved as safetensors.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qgate.backend import BackendOptions, GenerationSettings
from qgate.errors import BackendError
from qgate.results import RunReport, Verdict

_MISSING = [m for m in ("torch", "transformers", "safetensors") if not importlib.util.find_spec(m)]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"needs {', '.join(_MISSING)}: pip install torch==2.13.0 -e '.[hf]'",
)

CORPUS = (
    "The gate measures each quant against its reference and blocks the release when the "
    "damage crosses a floor. Quality loss is uneven: code and other scripts lose more than "
    "English prose. def f(x): return x * 2  # numbers 0123456789\n"
) * 4

POLICY = """
name: hf-test
on_inconclusive: fail
backend: {n_ctx: 128}
evaluation: {chunks: 2}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.01, per_domain: false}
  - use: kl-divergence
    options: {max_mean: 0.01}
"""


def write_tiny_hf(folder: Path, seed: int = 0, hidden: int = 64) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer)
    # the tokenizer adds its BOS itself, as Llama's does: qgate's backends add one only then
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
        initializer_range=0.3,  # sharper distributions than the default 0.02
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-hf")


def backend():
    from qgate_hf import HFBackend

    return HFBackend()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _perturb(src: Path, dst: Path, scale: float) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    _copy(src, dst)
    file = dst / "model.safetensors"
    tensors = load_file(file)
    generator = torch.Generator().manual_seed(1)
    noisy = {
        name: t + scale * t.std() * torch.randn(t.shape, generator=generator) if t.dim() == 2 else t
        for name, t in tensors.items()
    }
    save_file(noisy, file, metadata={"format": "pt"})
    return dst


def test_inspect_reads_config_and_headers(tiny_hf):
    import torch
    from transformers import AutoModelForCausalLM

    info = backend().inspect(tiny_hf)
    model = AutoModelForCausalLM.from_pretrained(tiny_hf, dtype=torch.float32)
    assert info.format == "hf"
    assert info.architecture == "LlamaForCausalLM"
    assert info.parameter_count == sum(p.numel() for p in model.parameters())
    assert info.bits_per_weight == pytest.approx(32.0)
    assert info.file_type == "F32" and set(info.tensor_types) == {"F32"}
    assert info.context_length == 512
    assert info.vocab_size == model.config.vocab_size
    assert info.identity["name"] == "tiny-hf"
    assert info.tokenizer_hash and len(info.tokenizer_hash) == 64
    assert info.chat_template and "messages" in info.chat_template
    assert info.chat_template_hash
    assert backend().detect(tiny_hf)
    assert not backend().detect(tiny_hf / "config.json")


def test_cli_inspect(qgate, tiny_hf):
    result = qgate("inspect", tiny_hf, "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["format"] == "hf"


def test_pickled_weights_are_refused(tmp_path, tiny_hf):
    folder = _copy(tiny_hf, tmp_path / "pickled")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(BackendError, match="never unpickles"):
        backend().inspect(folder)
    with pytest.raises(BackendError, match="never unpickles"):
        backend().load(folder, BackendOptions(n_ctx=64, extra={"device": "cpu"}))


def test_remote_code_is_refused(tmp_path, tiny_hf):
    folder = _copy(tiny_hf, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="trust_remote_code"):
        backend().inspect(folder)


def test_corrupt_safetensors_header_is_a_clear_error(tmp_path, tiny_hf):
    folder = _copy(tiny_hf, tmp_path / "cut")
    file = folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(BackendError, match="truncated"):
        backend().inspect(folder)


def test_quantized_config_is_not_claimed(tmp_path, tiny_hf):
    folder = _copy(tiny_hf, tmp_path / "awq-ish")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    assert not backend().detect(folder)
    with pytest.raises(BackendError, match="quantized"):
        backend().inspect(folder)


def test_scores_align_with_a_plain_forward_pass(tiny_hf):
    """Row i of score() predicts tokens[start + i] from the logits at start + i - 1."""
    import torch
    from transformers import AutoModelForCausalLM

    model = backend().load(tiny_hf, BackendOptions(n_ctx=64, extra={"device": "cpu"}))
    tokens = model.tokenize(CORPUS, add_bos=True)[:48]
    assert tokens[0] == model.bos_token
    plain = AutoModelForCausalLM.from_pretrained(tiny_hf, dtype=torch.float32)
    with torch.no_grad():
        logits = plain(torch.tensor([tokens])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1).numpy()
    start = 10
    scores = model.score(tokens, start=start, top_k=5, tail_samples=8)
    expected = logp[np.arange(start - 1, len(tokens) - 1), tokens[start:]]
    np.testing.assert_allclose(scores.target_logprob, expected, atol=1e-4)
    assert scores.start == start and len(scores) == len(tokens) - start
    np.testing.assert_array_equal(scores.top_ids[:, 0], logp[start - 1 : -1].argmax(axis=1))
    assert scores.tail_ids is not None and scores.tail_ids.shape == (len(scores), 8)
    # the same tokens give the same tail samples (seeded from the tokens)
    again = model.score(tokens, start=start, top_k=5, tail_samples=8)
    np.testing.assert_array_equal(scores.tail_ids, again.tail_ids)
    # sparse positions and gathered ids
    positions = [3, 17, 40]
    gather = np.array([[0, 1], [2, 3], [4, 5]])
    sparse = model.score(tokens, start=1, top_k=3, gather=gather, positions=positions)
    rows = np.array(positions) - 1
    np.testing.assert_allclose(
        sparse.target_logprob, logp[rows, np.array(tokens)[positions]], atol=1e-4
    )
    assert sparse.gathered_logprobs is not None
    np.testing.assert_allclose(
        sparse.gathered_logprobs, np.take_along_axis(logp[rows], gather, axis=1), atol=1e-4
    )
    np.testing.assert_array_equal(sparse.positions, positions)


@pytest.mark.parametrize("top_k", [1, 8])
def test_device_reduction_matches_the_numpy_one(top_k):
    """A subject pass reduced in torch gives the shared numpy reducer's figures."""
    import torch

    from qgate.errors import CheckError
    from qgate.scoring.logits import summarize_logits
    from qgate_transformers.reduction import summarize_tensor

    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((40, 3000)) * 4).astype(np.float32)
    tokens = rng.integers(0, 3000, size=60)
    scored = np.arange(20, 60)
    gather = rng.integers(0, 3000, size=(40, 16))
    ours = summarize_tensor(
        torch.from_numpy(logits),
        tokens,
        scored,
        top_k=top_k,
        gather=gather,
        tail_samples=0,
        rng=rng,
    )
    theirs = summarize_logits(logits, tokens[scored], start=20, top_k=top_k, gather=gather)
    assert ours.start == theirs.start == 20 and ours.tail_ids is None
    np.testing.assert_allclose(ours.target_logprob, theirs.target_logprob, rtol=1e-6)
    np.testing.assert_array_equal(ours.top_ids, theirs.top_ids)
    np.testing.assert_allclose(ours.top_logprobs, theirs.top_logprobs, rtol=1e-6)
    assert ours.gathered_logprobs is not None and theirs.gathered_logprobs is not None
    np.testing.assert_allclose(ours.gathered_logprobs, theirs.gathered_logprobs, rtol=1e-6)
    # a reference pass draws its tail samples with the shared numpy sampler, block by block
    sampled = summarize_tensor(
        torch.from_numpy(logits),
        tokens,
        scored,
        top_k=top_k,
        gather=None,
        tail_samples=4,
        rng=np.random.default_rng(1),
    )
    expected = summarize_logits(
        logits, tokens[scored], start=20, top_k=top_k, tail_samples=4, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(sampled.tail_ids, expected.tail_ids)
    np.testing.assert_allclose(sampled.tail_logprobs, expected.tail_logprobs, rtol=1e-6)
    logits[5, 10] = np.nan
    with pytest.raises(CheckError, match=r"non-finite logits .* at position 24"):
        summarize_tensor(
            torch.from_numpy(logits), tokens, scored, top_k=1, gather=None, tail_samples=0, rng=rng
        )


def test_tokenize_roundtrip_and_bos(tiny_hf):
    model = backend().load(tiny_hf, BackendOptions(n_ctx=64, extra={"device": "cpu"}))
    text = "The gate measures code."
    ids = model.tokenize(text, add_bos=False)
    assert model.bos_token not in ids
    assert model.tokenize(text, add_bos=True) == [model.bos_token, *ids]
    assert model.detokenize(ids) == text
    # special-token text stays text, as in the GGUF backend
    assert model.bos_token not in model.tokenize("a <s> b", add_bos=False)


def test_generation_is_deterministic(tiny_hf):
    model = backend().load(tiny_hf, BackendOptions(n_ctx=64, extra={"device": "cpu"}))
    greedy = GenerationSettings(max_tokens=12, temperature=0.0)
    first = model.generate("The gate", greedy)
    second = model.generate("The gate", greedy)
    assert first.text == second.text and first.tokens == second.tokens
    assert first.finish_reason in ("length", "eos") and len(first.tokens) <= 12
    sampled = GenerationSettings(max_tokens=12, temperature=1.0, seed=7)
    assert model.generate("The gate", sampled).tokens == model.generate("The gate", sampled).tokens
    if first.text.strip():
        stop = first.text.strip()[:1]
        stopped = model.generate("The gate", GenerationSettings(max_tokens=12, stop=[stop]))
        assert stopped.finish_reason == "stop" and stop not in stopped.text


def test_quantized_kv_cache_is_refused(tiny_hf):
    with pytest.raises(BackendError, match="KV cache"):
        backend().load(tiny_hf, BackendOptions(n_ctx=64, kv_cache="q8_0", extra={"device": "cpu"}))
    model = backend().load(tiny_hf, BackendOptions(n_ctx=64, extra={"device": "cpu"}))
    longer = model.reconfigure(n_ctx=256, kv_cache="f16")
    assert longer.n_ctx == 256 and longer.tokenize("x") == model.tokenize("x")


def test_check_same_model_passes_and_noisy_copy_fails(qgate, tmp_path, tiny_hf):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    twin = _copy(tiny_hf, tmp_path / "twin")
    noisy = _perturb(tiny_hf, tmp_path / "noisy", scale=0.5)
    out = tmp_path / "r.json"
    result = qgate(
        "check", twin, noisy, "--reference", tiny_hf, "--policy", policy, "--json", out, "-q"
    )
    assert result.code == 1, result
    report = RunReport.from_dict(json.loads(out.read_text()))
    same, bad = report.subjects
    assert same.verdict is Verdict.PASS, same
    values = {r.name: r.value for r in same.results}
    assert values["perplexity.ppl_delta"] == pytest.approx(0.0, abs=1e-9)
    assert values["kl-divergence.kld_mean"] == pytest.approx(0.0, abs=1e-6)
    assert bad.verdict is Verdict.FAIL
    failed = {r.name for r in bad.results if r.verdict is Verdict.FAIL}
    assert "kl-divergence.kld_mean" in failed


def test_different_tokenizer_is_refused(qgate, tmp_path, tiny_hf):
    """Same vocabulary size, different merges: the hashes differ and the check refuses."""
    other = tmp_path / "other"
    other.mkdir()
    _copy(tiny_hf, other / "m")
    tok = json.loads((other / "m" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    names = sorted(vocab, key=vocab.get)
    a, b = names[-1], names[-2]  # swap two ids
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "m" / "tokenizer.json").write_text(json.dumps(tok))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "r.json"
    result = qgate(
        "check", other / "m", "--reference", tiny_hf, "--policy", policy, "--json", out, "-q"
    )
    assert result.code == 1, result
    report = RunReport.from_dict(json.loads(out.read_text()))
    messages = " ".join(r.message or "" for r in report.subjects[0].results)
    assert "tokenizers differ" in messages


def test_token_sequences_compared_across_tokenizer_families(qgate, tmp_path, tiny_hf, monkeypatch):
    """Across formats the hashes do not compare: the scored token sequences are compared."""
    import qgate_transformers.folder as folder

    other = _copy(tiny_hf, tmp_path / "other-family")
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["model"]["merges"] = tok["model"]["merges"][:5]  # splits text into more tokens
    (other / "tokenizer.json").write_text(json.dumps(tok))
    real = folder.base_info

    def other_family(f, **kw):
        info = real(f, **kw)
        if f.path == other:
            info.extra["tokenizer_family"] = "another-format"
        return info

    monkeypatch.setattr("qgate_transformers.folder.base_info", other_family)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "r.json"
    result = qgate("check", other, "--reference", tiny_hf, "--policy", policy, "--json", out, "-q")
    assert result.code == 1, result
    report = RunReport.from_dict(json.loads(out.read_text()))
    messages = " ".join(r.message or "" for r in report.subjects[0].results)
    assert "different token sequences" in messages


def test_long_context_skips_a_kv_cache_type_the_backend_cannot_run(qgate, tmp_path, tiny_hf):
    policy = tmp_path / "long.yaml"
    policy.write_text(
        "name: long\nbackend: {n_ctx: 128}\ndatasets: [en]\nchecks:\n"
        "  - use: long-context\n"
        "    options: {context: 256, kv_cache: [f16, q8_0], positions_per_bucket: 8}\n"
    )
    out = tmp_path / "r.json"
    twin = _copy(tiny_hf, tmp_path / "twin")
    result = qgate("check", twin, "--reference", tiny_hf, "--policy", policy, "--json", out, "-q")
    assert result.code in (0, 1), result
    results = {
        r.name: r for r in RunReport.from_dict(json.loads(out.read_text())).subjects[0].results
    }
    skipped = results.get("long-context.late_excess_kld[q8_0]")
    assert skipped is not None, results
    assert skipped.verdict is Verdict.SKIP and "'q8_0' is not supported" in skipped.message, results
    assert results["long-context.late_excess_kld[f16]"].verdict is Verdict.PASS
