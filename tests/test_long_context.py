"""long-context on the fake backend (verdict logic) and a tiny real GGUF (the real sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qgate.results import RunReport, Verdict
from qgate_checks.long_context import bucket_edges, bucket_label, sample_positions
from tests.conftest import needs_llama_cpp


def policy(tmp_path: Path, options: str, extra: str = "") -> Path:
    path = tmp_path / "lc.yaml"
    path.write_text(
        "backend: {n_ctx: 256}\nevaluation: {bootstrap: 300, top_k: 16, tail_samples: 16}\n"
        f"checks:\n  - use: long-context\n    options: {{{options}}}\n{extra}"
    )
    return path


def run(qgate, tmp_path, policy_file, subject, reference) -> tuple[int, dict[str, object]]:
    out = tmp_path / "r.json"
    result = qgate(
        "check",
        subject,
        "--reference",
        reference,
        "--policy",
        policy_file,
        "--json",
        out,
        "--html",
        tmp_path / "r.html",
        "-q",
    )
    assert result.code in (0, 1), result
    report = RunReport.from_dict(json.loads(out.read_text()))
    return result.code, {r.metric: r for r in report.subjects[0].results}


def test_buckets_and_positions():
    assert bucket_edges(4096) == [0, 512, 1024, 2048, 4096]
    assert bucket_edges(3000) == [0, 512, 1024, 2048, 3000]
    assert bucket_edges(256) == [0, 128, 256]
    assert bucket_label(1024, 2048) == "1K-2K" and bucket_label(0, 512) == "0-512"
    positions, buckets = sample_positions([0, 512, 1024], 8)
    assert (
        positions[0] >= 1 and positions[-1] == 1023 and list(sorted(positions)) == list(positions)
    )
    assert (buckets == 0).sum() == 8 and (buckets == 1).sum() == 8


def test_a_cache_that_degrades_late_fails_the_excess_floor(qgate, fake, tmp_path):
    options = "context: 2048, kv_cache: [f16, q8_0, q4_0], positions_per_bucket: 24, max_late_excess_kld: 0.05, max_bucket_kld: 1.0"
    code, results = run(
        qgate, tmp_path, policy(tmp_path, options), fake("sub", kv_decay=0.6), fake("ref")
    )
    assert code == 1
    assert results["late_excess_kld[f16]"].verdict is Verdict.PASS
    assert results["late_excess_kld[f16]"].value == pytest.approx(0.0, abs=1e-6)
    assert results["late_excess_kld[q4_0]"].verdict is Verdict.FAIL
    assert 0 < results["late_excess_kld[q8_0]"].value < results["late_excess_kld[q4_0]"].value
    # the sweep's charts and tables ride on the check's first result
    first = next(r for r in results.values() if r.check == "long-context")
    lines = first.figures.charts[0].lines
    assert [line.name for line in lines] == ["KV f16", "KV q8_0", "KV q4_0"]
    html = (tmp_path / "r.html").read_text()
    assert "KL divergence by position" in html and "<svg" in html and "Pass-key retrieval" in html


def test_a_uniformly_damaged_cache_passes_the_excess_but_fails_the_bucket_floor(
    qgate, fake, tmp_path
):
    options = "context: 1024, kv_cache: [q4_0], positions_per_bucket: 24, max_late_excess_kld: 0.05, max_bucket_kld: 0.05"
    code, results = run(
        qgate, tmp_path, policy(tmp_path, options), fake("sub", kv_noise=1.0), fake("ref")
    )
    assert code == 1
    assert results["late_excess_kld[q4_0]"].verdict is not Verdict.FAIL
    assert results["max_bucket_kld[q4_0]"].verdict is Verdict.FAIL


def test_quant_floor_forbids_q4_0_caches_from_a_context_on(qgate, fake, tmp_path):
    floor = "  - use: quant-floor\n    options: {min_kv_cache: q8_0, kv_cache_from_context: 1024}\n"
    long_q4 = policy(
        tmp_path, "context: 2048, kv_cache: [f16, q4_0], positions_per_bucket: 8", floor
    )
    code, results = run(qgate, tmp_path, long_q4, fake("sub"), fake("ref"))
    assert code == 1 and results["kv_cache_bits"].verdict is Verdict.FAIL
    assert "q4_0 at 2048" in results["kv_cache_bits"].message
    assert results["kv_cache_bits"].details["evidence"] == {"exact": True}
    long_q8 = policy(
        tmp_path, "context: 2048, kv_cache: [f16, q8_0], positions_per_bucket: 8", floor
    )
    code, results = run(qgate, tmp_path, long_q8, fake("sub"), fake("ref"))
    assert results["kv_cache_bits"].verdict is Verdict.PASS
    short = tmp_path / "short.yaml"
    short.write_text(
        "checks:\n" + floor.replace("{min_kv_cache", "{min_bits_per_weight: 2, min_kv_cache")
    )
    result = qgate("check", fake("sub"), "--kv-cache", "q4_0", "--policy", short, "-q")
    assert result.code == 0  # n_ctx 512 < 1024: the floor does not apply
    for n_ctx in ("1024", "2048"):  # inclusive: exactly at the boundary is inside it
        result = qgate(
            "check", fake("sub"), "--kv-cache", "q4_0", "--n-ctx", n_ctx, "--policy", short, "-q"
        )
        assert result.code == 1, n_ctx
    result = qgate(
        "check", fake("sub"), "--kv-cache", "q4_0", "--n-ctx", "1023", "--policy", short, "-q"
    )
    assert result.code == 0


def test_the_old_exclusive_option_name_is_refused(qgate, fake, tmp_path):
    """``kv_cache_above_context`` was exclusive; a policy that still names it is refused (exit 2)
    rather than silently applying the floor one token later or not at all."""
    old = tmp_path / "old.yaml"
    old.write_text(
        "checks:\n  - use: quant-floor\n"
        "    options: {min_kv_cache: q8_0, kv_cache_above_context: 4096}\n"
    )
    result = qgate("check", fake("sub"), "--policy", old, "-q")
    assert result.code == 2
    assert "kv_cache_above_context" in result.err + result.out


@needs_llama_cpp
@pytest.mark.llama_cpp
def test_the_sweep_runs_on_a_real_model_and_q4_0_hurts_more_than_q8_0(qgate, tmp_path, tiny_ladder):
    options = "context: 2048, kv_cache: [q8_0, q4_0], positions_per_bucket: 24, needles: 4"
    _, results = run(
        qgate, tmp_path, policy(tmp_path, options), tiny_ladder["F16"], tiny_ladder["F16"]
    )
    assert results["max_bucket_kld[q4_0]"].value > results["max_bucket_kld[q8_0]"].value > 0
    assert results["ppl_delta[q4_0]"].value > results["ppl_delta[q8_0]"].value
    first = next(iter(results.values()))  # the sweep's details ride on the first result
    assert first.details["context"] == 2048
    for name in ("ppl_delta[q4_0]", "max_bucket_kld[q4_0]", "max_bucket_kld_p99[q4_0]"):
        assert results[name].interval is not None, name
        assert results[name].details["evidence"]["resolution"] > 0, name
    # a random model retrieves no pass key: no signal, so no verdict rests on retrieval
    assert results["retrieval_drop[q8_0]"].verdict is Verdict.SKIP


def test_a_warm_run_never_loads_the_reference(qgate, fake, tmp_path):
    """The long sequence, the reference's scores on it and its pass-key hits are all cached."""
    options = "context: 1024, kv_cache: [f16, q8_0], positions_per_bucket: 8"
    policy_file = policy(tmp_path, options)
    ref, sub = fake("ref"), fake("sub", kv_decay=0.3)
    reports = []
    for _ in range(2):
        out = tmp_path / "r.json"
        result = qgate("check", sub, "--reference", ref, "--policy", policy_file, "--json", out)
        assert result.code in (0, 1), result
        reports.append(RunReport.from_dict(json.loads(out.read_text())))
    cold, warm = reports
    assert cold.counters["model_loads"] == 2 and warm.counters["model_loads"] == 1
    first = {r.name: r.value for r in cold.subjects[0].results}
    assert first == {r.name: r.value for r in warm.subjects[0].results}
