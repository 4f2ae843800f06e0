"""Integration: the real Gemma 3 270M ladder under the shipped production policy.

The F16 reference is the shipped Q4_K_M requantized to F16; Q8_0 and Q2_K are made from that
F16 with llama.cpp, as a quant publisher would. Q8_0 must pass production and Q2_K must fail it
on perplexity and KL divergence, with the failures in every output format.

The test runs every check and floor of production, on smaller samples (``TEST_SIZED``): the
shipped sample sizes took 17 minutes on 2 cores, these 3-4. Production at its own sizes on the
same three models is the recorded README run (``docs/runs/gemma-production.json``), which
``tests/test_readme_figures.py`` holds the README to.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from qgate.results import RunReport, Verdict
from tests.conftest import needs_gemma

pytestmark = [needs_gemma, pytest.mark.gemma]

# production with every check, floor and severity as shipped; only the samples shrink: 3 chunks
# per corpus instead of 8, shorter generations, 5 tasks per tier, and one 2K sequence with an f16
# cache for long-context (the q8_0 sweep at 4K is in the recorded run).
TEST_SIZED = """
name: production-test-sized
extends: production
evaluation: {chunks: 3}
checks:
  - use: repetition
    options: {max_tokens: 32}
  - use: task-accuracy
    options: {tasks_per_tier: 5}
  - use: long-context
    options: {context: 2048, kv_cache: [f16], max_sequences: 1}
"""


def test_production_passes_q8_0_and_fails_q2_k(qgate, tmp_path, gemma_ladder):
    policy = tmp_path / "production-test-sized.yaml"
    policy.write_text(TEST_SIZED)
    out = {
        name: tmp_path / f"gemma.{ext}"
        for name, ext in (("json", "json"), ("junit", "xml"), ("html", "html"), ("markdown", "md"))
    }
    args = [a for name, path in out.items() for a in (f"--{name}", path)]
    result = qgate(
        "check",
        gemma_ladder["Q8_0"],
        gemma_ladder["Q2_K"],
        "--reference",
        gemma_ladder["F16"],
        "--policy",
        policy,
        *args,
        "-q",
    )
    assert result.code == 1, result
    report = RunReport.from_dict(json.loads(out["json"].read_text()))
    q8, q2 = report.subjects
    print(
        "\n"
        + "\n".join(
            f"{s.label:18} {r.name:34} {r.verdict.value:5} {r.message}" for s, r in report.results
        )
    )

    assert q8.verdict in (Verdict.PASS, Verdict.WARN), [
        r.message for r in q8.results if r.verdict.is_blocking
    ]
    q8_results = {r.name: r for r in q8.results}
    assert q8_results["kl-divergence.kld_mean"].value < 0.02
    assert q8_results["kl-divergence.top1_agreement"].value > 0.9

    q2_failed = {r.name for r in q2.results if r.verdict is Verdict.FAIL}
    assert {
        "perplexity.ppl_delta",
        "kl-divergence.kld_mean",
        "kl-divergence.top1_agreement",
    } <= q2_failed
    q2_ppl = {r.name: r for r in q2.results}["perplexity.ppl_delta"]
    assert q2_ppl.interval is not None and q2_ppl.interval.low > 0.10  # the 2-bit cliff, not noise

    # generation: Gemma 270M loops under greedy decoding even at F16 and scores below 20 % on every
    # task tier, so on this model the generation checks carry little signal (at production's
    # 64 tokens Q8_0 collapsed on 80 % of prompts, Q2_K on 73 %, the reference on 70 % in one CI
    # run). They must still run on both quants, judge collapse against the reference's own rate
    # and say the signal is weak, and turn a tier without signal into a skip, not a verdict.
    generation = [
        r for s in (q8, q2) for r in s.results if r.check in ("repetition", "task-accuracy")
    ]
    assert generation and all(r.verdict is not Verdict.ERROR for r in generation)
    for subject in (q8, q2):
        rep = next(r for r in subject.results if r.check == "repetition")
        reference_rate = rep.details["reference_collapse_rate"]
        assert rep.value == pytest.approx(rep.details["subject_collapse_rate"] - reference_rate)
        assert ("weak signal" in rep.message) == (reference_rate > 0.5), rep.message
        for tier in (
            r for r in subject.results if r.name.startswith("task-accuracy.accuracy_drop")
        ):
            no_signal = "carries no signal" in tier.message
            assert no_signal == (tier.verdict is Verdict.SKIP), tier.message

    # one load per model, one scoring pass per model and chunk: perplexity scores it, and
    # kl-divergence and runtime-parity reuse it on each of the two quants
    assert report.counters["model_loads"] == 3
    assert report.counters["scoring_pass_reuses"] == 2 * 2

    suites = {s.get("name"): s for s in ET.parse(out["junit"]).getroot().findall("testsuite")}
    assert int(suites["gemma-q8_0.gguf"].get("failures")) == 0
    q2_suite = suites["gemma-q2_k.gguf"]
    failures = q2_suite.findall("testcase/failure")
    assert int(q2_suite.get("failures")) == len(failures) >= 3
    assert any("ppl_delta" in (f.get("message") or "") for f in failures)

    markdown = out["markdown"].read_text()
    html = out["html"].read_text()
    for text in (markdown, html):
        assert "gemma-q2" in text and "ppl" in text
    assert "**FAIL**" in markdown


def test_every_shipped_corpus_gives_at_least_eight_chunks(gemma_ladder):
    """>= 8 chunks of 512 tokens per corpus on Gemma 3's 262k vocabulary; Llama 3's smaller
    vocabulary (128k) cuts the same text into more tokens, so it gets at least as many."""
    from qgate.backend import BackendOptions
    from qgate.datasets import BUILTIN_CORPORA, load_dataset, make_chunks
    from qgate.policy.model import DatasetSpec
    from qgate_gguf import GGUFBackend

    model = GGUFBackend().load(gemma_ladder["Q2_K"], BackendOptions(n_ctx=512, threads=2))
    try:
        for name in BUILTIN_CORPORA:
            chunks = make_chunks(
                model.tokenize,
                model.bos_token,
                load_dataset(DatasetSpec(name=name)),
                n_ctx=512,
                max_chunks=100,
            )
            assert len(chunks) >= 8, name
    finally:
        model.close()
