"""The GGUF backend on tiny real models built by the tests (llama.cpp through llama-cpp-python)."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from qgate.backend import BackendOptions, GenerationSettings
from qgate.errors import BackendError, CheckError
from qgate.results import RunReport, Verdict
from tests.conftest import needs_llama_cpp

pytestmark = [needs_llama_cpp, pytest.mark.llama_cpp]


def backend():
    from qgate_gguf import GGUFBackend

    return GGUFBackend()


def test_metadata_describes_each_quant(tiny_ladder):
    infos = {ft: backend().inspect(path) for ft, path in tiny_ladder.items()}
    assert infos["F32"].bits_per_weight == pytest.approx(32.0, rel=1e-3)
    assert infos["F16"].bits_per_weight == pytest.approx(16.0, rel=0.01)  # norms stay F32
    assert 8.0 < infos["Q8_0"].bits_per_weight < 9.0
    assert 4.0 < infos["Q4_K_M"].bits_per_weight < 6.0
    assert 2.5 < infos["Q2_K"].bits_per_weight < 4.0
    assert infos["Q2_K"].file_type == "Q2_K" and "Q2_K" in infos["Q2_K"].tensor_types
    assert len({i.tokenizer_hash for i in infos.values()}) == 1  # same vocabulary in every quant
    for info in infos.values():
        assert info.architecture == "llama"
        assert info.vocab_size == 259
        assert info.parameter_count == infos["F32"].parameter_count
        assert info.identity["name"] == "tiny-llama"
        assert info.context_length == 4096


def test_inspect_json_from_the_cli(qgate, tiny_ladder):
    result = qgate("inspect", tiny_ladder["Q4_K_M"], "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["format"] == "gguf" and data["file_type"] == "Q4_K_M"


def _corrupt(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_files_give_clear_errors(tmp_path, tiny_ladder):
    good = tiny_ladder["Q8_0"].read_bytes()
    cases = {
        "empty.gguf": (b"", "not a GGUF file"),
        "magic.gguf": (b"GGML" + good[4:], "bad magic"),
        "truncated.gguf": (good[: len(good) // 2], "truncated"),
        "header.gguf": (good[:8] + struct.pack("<QQ", 1 << 60, 3) + good[24:], "impossible"),
        "version.gguf": (good[:4] + struct.pack("<I", 99) + good[8:], "unsupported GGUF version"),
        "cut-header.gguf": (good[:2000], "truncated or corrupt"),
        "tiny-counts.gguf": (good[:200], "impossible in a file of 200 bytes"),
    }
    for name, (data, message) in cases.items():
        path = _corrupt(tmp_path, name, data)
        with pytest.raises(BackendError, match=message):
            backend().inspect(path)


def test_truncated_subject_is_an_error_result_not_a_crash(qgate, tmp_path, tiny_ladder):
    data = tiny_ladder["Q2_K"].read_bytes()
    cut = _corrupt(tmp_path, "cut.gguf", data[: len(data) - 1000])
    out = tmp_path / "r.json"
    result = qgate(
        "check",
        cut,
        "--reference",
        tiny_ladder["F16"],
        "--policy",
        "permissive",
        "--json",
        out,
        "-q",
    )
    assert result.code == 1
    report = RunReport.from_dict(json.loads(out.read_text()))
    assert report.subjects[0].verdict is Verdict.ERROR
    assert "truncated" in report.subjects[0].results[0].message


def test_low_level_scores_match_the_high_level_api(tiny_ladder):
    """Position alignment check: logits at p predict token p+1, exactly as Llama.eval gives them."""
    import llama_cpp

    path = tiny_ladder["F16"]
    model = backend().load(path, BackendOptions(n_ctx=128, threads=2))
    try:
        tokens = model.tokenize(
            "The river carried light past the stone houses of the old town. " * 3
        )[:128]
        scores = model.score(tokens, start=65, top_k=5)
    finally:
        model.close()
    llm = llama_cpp.Llama(str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    expected = np.array([logp[p - 1, tokens[p]] for p in range(65, len(tokens))])
    assert len(scores) == len(expected)
    # different batch shapes take different matmul paths: agreement to ~1e-3 relative
    np.testing.assert_allclose(scores.target_logprob, expected, rtol=2e-3, atol=1e-3)
    assert scores.top_ids[:, 0].tolist() == [
        int(np.argmax(logp[p - 1])) for p in range(65, len(tokens))
    ]


def test_quality_ladder_is_ordered_and_f32_matches_f16(tiny_ladder):
    """Real quantization damage: KLD to the F32 grows as bits shrink, F16 is nearly lossless."""
    from qgate.datasets import Dataset, scored_start
    from qgate.scoring.kld import kld_estimate

    options = BackendOptions(n_ctx=256, threads=2)
    text = Path(__file__).parents[1].joinpath("qgate/data/corpora/en.txt").read_text()[:6000]
    dataset = Dataset("en", text, "x", "test")
    ref = backend().load(tiny_ladder["F32"], options)
    tokens = ref.tokenize(dataset.text)[:256]
    start = scored_start(256)
    ref_scores = ref.score(tokens, start=start, top_k=32, tail_samples=16)
    ref.close()
    mean_kld = {}
    for ft in ("F16", "Q8_0", "Q4_K_M", "Q2_K"):
        model = backend().load(tiny_ladder[ft], options)
        ids = np.concatenate([ref_scores.top_ids, ref_scores.tail_ids], axis=1)
        s = model.score(tokens, start=start, top_k=32, gather=ids)
        model.close()
        at = s.gathered_logprobs
        tail = (ref_scores.tail_logprobs, at[:, 32:])
        mean_kld[ft] = float(kld_estimate(ref_scores.top_logprobs, at[:, :32], *tail).mean())
    assert abs(mean_kld["F16"]) < 1e-4
    assert mean_kld["F16"] < mean_kld["Q8_0"] < mean_kld["Q4_K_M"] < mean_kld["Q2_K"]


def test_quantized_kv_cache_loads_and_changes_the_scores(tiny_ladder):
    tokens = list(range(3, 200))
    results = {}
    for kv in ("f16", "q8_0", "q4_0"):
        model = backend().load(
            tiny_ladder["F16"], BackendOptions(n_ctx=256, threads=2, kv_cache=kv)
        )
        results[kv] = model.score(tokens, start=100, top_k=4).target_logprob
        model.close()
    assert (
        np.abs(results["f16"] - results["q8_0"]).max()
        < np.abs(results["f16"] - results["q4_0"]).max()
    )


def test_decode_calls_are_cut_to_fit_the_logits_budget():
    """llama.cpp sizes two buffers per context by the outputs of one decode call (x vocab)."""
    from qgate_gguf.llama import default_batch

    assert default_batch(32_000) == 512  # Llama 2: 64 MiB of logits per call
    assert default_batch(262_144) == 128  # Gemma 3: 128 MiB instead of 512 MiB
    assert default_batch(4_000_000) == 32  # never below 32 tokens a call


def test_scores_do_not_depend_on_how_the_chunk_is_cut_into_decode_calls(tiny_ladder):
    tokens = list(range(3, 250))
    scores = {}
    for batch in (16, 256):
        model = backend().load(
            tiny_ladder["F16"], BackendOptions(n_ctx=256, threads=2, batch_size=batch)
        )
        assert model.n_batch == batch
        scores[batch] = model.score(tokens, start=100, top_k=4)
        model.close()
    np.testing.assert_allclose(
        scores[16].target_logprob, scores[256].target_logprob, rtol=2e-3, atol=1e-3
    )
    assert (scores[16].top_ids[:, 0] == scores[256].top_ids[:, 0]).mean() > 0.95


def test_a_borrowed_context_is_freed_and_the_loaded_model_kept(tiny_ladder):

    from qgate.handle import ModelHandle
    from qgate.hashing import DigestIndex
    from qgate.instruments import Instruments

    instruments = Instruments()
    handle = ModelHandle(
        tiny_ladder["F16"],
        backend(),
        BackendOptions(n_ctx=128, threads=2),
        digests=DigestIndex(None),
        instruments=instruments,
    )
    tokens = [3 + i % 250 for i in range(497)]  # the tiny vocabulary has 259 tokens
    with handle.borrowed(n_ctx=512, kv_cache="q8_0") as long:
        assert long.n_ctx == 512 and len(long.score(tokens, start=400, top_k=2)) == 97
    assert long._ctx is None  # type: ignore[attr-defined]  # llama_free ran
    with handle.borrowed(n_ctx=128, kv_cache="f16") as same:
        assert same is handle.model  # the run's own context is lent, not freed
    assert len(handle.model.score(tokens[:128], start=64, top_k=2)) == 64
    counters = instruments.counters
    assert counters["model_loads"] == 1 and counters["contexts"] == 1
    handle.close()


def test_unsupported_kv_cache_type_is_a_clear_error(tiny_ladder):
    with pytest.raises(BackendError, match="KV cache type 'q6'"):
        backend().load(tiny_ladder["F16"], BackendOptions(n_ctx=64, kv_cache="q6"))


def test_generation_is_greedy_deterministic_and_respects_budget_and_stops(tiny_ladder):
    model = backend().load(tiny_ladder["Q8_0"], BackendOptions(n_ctx=256, threads=2))
    try:
        a = model.generate("Once upon a time", GenerationSettings(max_tokens=24))
        b = model.generate("Once upon a time", GenerationSettings(max_tokens=24))
        assert a.tokens == b.tokens and len(a.tokens) <= 24
        assert a.finish_reason in ("length", "eos")
        sampled = [
            model.generate(
                "Once", GenerationSettings(max_tokens=16, temperature=1.0, seed=s)
            ).tokens
            for s in (1, 1, 2)
        ]
        assert sampled[0] == sampled[1]
        long = model.generate("Once upon a time", GenerationSettings(max_tokens=64))
        stop = next(
            c for c in long.text[4:] if c.isascii() and c.isprintable()
        )  # deterministic weights
        stopped = model.generate("Once upon a time", GenerationSettings(max_tokens=64, stop=[stop]))
        assert stopped.finish_reason == "stop"
        assert stop not in stopped.text and long.text.startswith(stopped.text)
        prompt = "the river " * 200  # more tokens than the context
        n_prompt = len(model.tokenize(prompt))
        with pytest.raises(
            CheckError, match=f"the prompt has {n_prompt} tokens, more than the context of 256"
        ):
            model.generate(prompt, GenerationSettings(max_tokens=8))
        near = model.detokenize(model.tokenize(prompt, add_bos=False)[:250])
        room = 256 - len(model.tokenize(near))  # the context, not max_tokens, bounds this one
        filled = model.generate(near, GenerationSettings(max_tokens=64, temperature=1.0, seed=3))
        assert 0 < room < 64 and len(filled.tokens) <= room
        assert filled.finish_reason == "eos" or len(filled.tokens) == room
    finally:
        model.close()


def test_end_to_end_ladder_under_permissive(qgate, tmp_path, tiny_ladder):
    junit, out = tmp_path / "j.xml", tmp_path / "r.json"
    result = qgate(
        "check",
        tiny_ladder["Q8_0"],
        tiny_ladder["Q2_K"],
        "--reference",
        tiny_ladder["F16"],
        "--policy",
        "permissive",
        "--junit",
        junit,
        "--json",
        out,
        "--html",
        tmp_path / "r.html",
        "-q",
    )
    assert result.code == 1, result
    report = RunReport.from_dict(json.loads(out.read_text()))
    q8, q2 = report.subjects
    assert q8.verdict in (Verdict.PASS, Verdict.WARN)
    assert q2.verdict is Verdict.FAIL
    failed = {r.name for r in q2.results if r.verdict is Verdict.FAIL}
    assert "kl-divergence.kld_mean" in failed
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert int(suites[0].get("failures")) == 0 and int(suites[1].get("failures")) >= 1
    assert report.counters["model_loads"] == 3


def test_chat_template_is_read_from_the_file_and_rendered_in_the_sandbox(tmp_path):
    from qgate.chat import format_prompt
    from tests.tiny_gguf import write_tiny_llama

    template = (
        "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    path = write_tiny_llama(tmp_path / "chat.gguf", chat_template=template, n_layers=1)
    info = backend().inspect(path)
    assert info.chat_template == template
    assert info.extra["has_chat_template"] and info.chat_template_hash
    assert "chat_template" not in info.to_dict()  # untrusted text stays out of the reports
    rendered = format_prompt(info.chat_template, "Hi there", kind="instruction")
    assert rendered.style == "template" and rendered.text == "<|user|>Hi there<|end|><|assistant|>"
