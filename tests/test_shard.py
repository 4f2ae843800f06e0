"""Sharding (`qgate check --shard K/N`), `qgate merge` and `qgate baseline` on the fake backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.results import RunReport, Verdict
from qgate.shard import (
    SCORING_GROUP,
    ShardSelection,
    Unit,
    parse_shard,
    plan_units,
    shard_of,
)

POLICY = """
name: shards
backend: {n_ctx: 128}
evaluation: {chunks: 3, top_k: 8, bootstrap: 200}
datasets: [en, code]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: kl-divergence
    options: {max_mean: 0.05, min_top1_agreement: 0.8}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
  - use: quant-floor
    id: floor-high
    options: {min_bits_per_weight: 6.0}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "shards.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def ladder(fake) -> tuple[Path, list[Path]]:
    """A reference and four quants: passing, warning, failing on scoring, failing on bits."""
    subjects = [
        fake("q8", noise=0.02, metadata={"bits_per_weight": 8.5}),
        fake("q5", noise=0.3, metadata={"bits_per_weight": 5.5}),
        fake("q3", noise=1.0, metadata={"bits_per_weight": 3.9}),
        fake("q6", noise=0.05, metadata={"bits_per_weight": 6.6}),
    ]
    return fake("ref"), subjects


def read(path: Path) -> RunReport:
    return RunReport.from_dict(json.loads(path.read_text()))


def run_shards(qgate, ladder, policy_file, tmp_path, count=3, extra=()):
    ref, subjects = ladder
    files = []
    for index in range(1, count + 1):
        out = tmp_path / f"shard-{index}-of-{count}.json"
        result = qgate(
            "check",
            *subjects,
            "--reference",
            ref,
            "--policy",
            policy_file,
            "--shard",
            f"{index}/{count}",
            "--json",
            out,
            "-q",
            *extra,
        )
        assert result.code in (0, 1), result
        files.append(out)
    return files


def comparable(report: RunReport) -> dict[str, tuple[str, list[tuple[str, str, object]]]]:
    return {
        s.path: (s.verdict.value, [(r.name, r.verdict.value, r.value) for r in s.results])
        for s in report.subjects
    }


# -- the plan -------------------------------------------------------------------------------
def test_parse_shard_accepts_k_of_n_and_refuses_the_rest() -> None:
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/3", "1/3/4"):
        with pytest.raises(Exception, match="K/N"):
            parse_shard(bad)


def test_shard_flag_is_validated_with_a_usage_error(qgate, fake, policy_file) -> None:
    for bad in ("0/3", "4/3", "two"):
        result = qgate("check", fake("q"), "--policy", policy_file, "--shard", bad)
        assert result.code == 2, result
        assert "--shard" in result.err and "K/N" in result.err


def test_the_split_is_complete_disjoint_and_keeps_scoring_together(policy_file) -> None:
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    subjects = [f"models/quant-{i}.gguf" for i in range(12)]
    planned = plan_units(subjects, policy, registry.check_objects())
    assert len(planned) == 12 * 3  # scoring, quant-floor, floor-high per subject
    scoring = [u for u in planned if u.group == SCORING_GROUP]
    assert {u.checks for u in scoring} == {("perplexity", "kl-divergence")}
    shards = [ShardSelection(k, 3, planned) for k in (1, 2, 3)]
    ran = [u for s in shards for u in s.units]
    assert sorted(ran, key=str) == sorted(planned, key=str)  # each unit exactly once
    assert all(s.units for s in shards)
    for shard in shards:  # perplexity and kl-divergence of a subject always in the same shard
        for subject in subjects:
            assert shard.selects(subject, "perplexity") == shard.selects(subject, "kl-divergence")


def test_the_split_is_stable_across_machines_and_directories(policy_file) -> None:
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    here = plan_units(["a/q4.gguf", "a/q8.gguf"], policy, registry.check_objects())
    there = plan_units(["/runner/work/b/q4.gguf", "q8.gguf"], policy, registry.check_objects())
    for count in (2, 3, 4, 7):
        assert [shard_of(u, count) for u in here] == [shard_of(u, count) for u in there]
    # pinned: a change of the hash would make the shards of two qgate versions disagree
    assert [shard_of(Unit("m/q4_k_m.gguf", g, ()), 4) for g in ("scoring", "floor-high")] == [2, 4]
    assert [shard_of(Unit(f"q{i}.gguf", "scoring", ()), 5) for i in range(8)] == [
        2, 5, 3, 2, 2, 5, 5, 1,
    ]  # fmt: skip


def test_shard_field_round_trips_and_is_none_when_missing() -> None:
    report = RunReport(policy="p", shard={"index": 1, "count": 2, "units": [], "planned_units": []})
    assert RunReport.from_dict(report.to_dict()).shard == report.shard
    data = RunReport(policy="p").to_dict()
    del data["shard"]
    assert RunReport.from_dict(data).shard is None


# -- shards merged equal one run --------------------------------------------------------------
def test_three_shards_merged_equal_one_unsharded_run(qgate, ladder, policy_file, tmp_path):
    ref, subjects = ladder
    whole = tmp_path / "whole.json"
    unsharded = qgate(
        "check", *subjects, "--reference", ref, "--policy", policy_file, "--json", whole, "-q"
    )
    assert unsharded.code == 1, unsharded
    files = run_shards(qgate, ladder, policy_file, tmp_path)
    shards = [read(f) for f in files]
    assert sum(len(s.shard["units"]) for s in shards) == len(shards[0].shard["planned_units"])
    assert all(s.shard["planned_units"] == shards[0].shard["planned_units"] for s in shards)

    merged_path, junit, markdown = (
        tmp_path / "merged.json",
        tmp_path / "merged.xml",
        tmp_path / "merged.md",
    )
    merged = qgate("merge", *files, "--json", merged_path, "--junit", junit, "--markdown", markdown)
    assert merged.code == unsharded.code == 1, merged
    expected, got = read(whole), read(merged_path)
    assert got.verdict is expected.verdict is Verdict.FAIL
    assert comparable(got) == comparable(expected)  # same subjects, order, names, verdicts, values
    assert got.shard is None and not got.incomplete
    assert junit.stat().st_size > 0 and "qgate: FAIL" in markdown.read_text()
    assert "q3" in merged.out  # the console summary of the merged report


def test_a_missing_shard_fails_the_merge_with_a_clear_message(qgate, ladder, policy_file, tmp_path):
    files = run_shards(qgate, ladder, policy_file, tmp_path)
    missing = read(files[1])
    out = tmp_path / "merged.json"
    result = qgate("merge", files[0], files[2], "--json", out, "-q")
    assert result.code == 1, result
    assert "shard 2/3 missing: units" in result.err and "were not run" in result.err
    report = read(out)
    errors = [r for _, r in report.results if r.check == "shard"]
    assert len(errors) == len(missing.shard["units"])  # one error per unit nobody ran
    assert all(r.verdict is Verdict.ERROR and "shard 2/3 missing" in r.message for r in errors)
    label = Unit.from_dict(missing.shard["units"][0]).label
    assert label in errors[0].message


def test_an_incomplete_shard_is_reported_and_fails_the_merge(qgate, ladder, policy_file, tmp_path):
    files = run_shards(qgate, ladder, policy_file, tmp_path)
    data = json.loads(files[0].read_text())
    data["incomplete"] = True
    files[0].write_text(json.dumps(data))
    result = qgate("merge", *files, "-q")
    assert result.code == 1, result
    assert "shard 1/3 incomplete" in result.err


def test_shards_of_different_splits_or_policies_are_a_usage_error(
    qgate, ladder, policy_file, tmp_path
):
    three = run_shards(qgate, ladder, policy_file, tmp_path / "three")
    two = run_shards(qgate, ladder, policy_file, tmp_path / "two", count=2)
    result = qgate("merge", three[0], three[1], two[1], "-q")
    assert result.code == 2, result
    assert "split different ways" in result.err

    other = tmp_path / "other.yaml"
    other.write_text(POLICY.replace("max_delta: 0.05", "max_delta: 0.02"))
    changed = run_shards(qgate, ladder, other, tmp_path / "changed")
    result = qgate("merge", three[0], three[1], changed[2], "-q")
    assert result.code == 2 and "policy digests differ" in result.err

    result = qgate("merge", three[0], three[0], three[1], three[2], "-q")
    assert result.code == 2 and "given more than once" in result.err  # a copy

    again = run_shards(qgate, ladder, policy_file, tmp_path / "again")  # shard 1/3 re-run
    result = qgate("merge", three[0], again[0], three[1], three[2], "-q")
    assert result.code == 2 and "shard 1/3 given twice" in result.err


def test_whole_runs_merge_and_cannot_mix_with_shards(qgate, ladder, policy_file, tmp_path):
    ref, subjects = ladder
    parts = []
    for subject in subjects[:2]:
        out = tmp_path / f"{subject.name}.json"
        qgate("check", subject, "--reference", ref, "--policy", policy_file, "--json", out, "-q")
        parts.append(out)
    out = tmp_path / "merged.json"
    result = qgate("merge", *parts, "--json", out, "-q")
    assert result.code == 1  # q5 fails its top-1 agreement
    assert [s.path for s in read(out).subjects] == [str(s) for s in subjects[:2]]
    shard = run_shards(qgate, ladder, policy_file, tmp_path / "s")[0]
    mixed = qgate("merge", parts[0], shard, "-q")
    assert mixed.code == 2 and "cannot merge shard results" in mixed.err
    assert qgate("merge", tmp_path / "nope.json").code == 2


def test_an_empty_shard_passes_and_loads_nothing(qgate, fake, policy_file, tmp_path):
    """A shard whose units are all elsewhere opens no model and exits 0."""
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    subject = fake("only")
    planned = plan_units([str(subject)], policy, registry.check_objects())
    busy = {shard_of(u, 8) for u in planned}
    idle = next(k for k in range(1, 9) if k not in busy)
    out = tmp_path / "idle.json"
    result = qgate(
        "check", subject, "--reference", fake("ref"), "--policy", policy_file,
        "--shard", f"{idle}/8", "--json", out, "-q",
    )  # fmt: skip
    assert result.code == 0, result
    report = read(out)
    assert report.subjects == [] and report.counters.get("model_loads", 0) == 0
    assert report.shard["units"] == [] and len(report.shard["planned_units"]) == 3


# -- baseline ---------------------------------------------------------------------------------
def _qgate_process(*args: object, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QGATE_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "qgate", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_baseline_then_check_in_a_fresh_process_never_loads_the_reference(
    ladder, policy_file, tmp_path
):
    ref, subjects = ladder
    cache = tmp_path / "ci-cache"
    first = _qgate_process("baseline", ref, "--policy", policy_file, "-q", cache=cache)
    assert first.returncode == 0, first.stderr
    assert "en" in first.stdout and "code" in first.stdout
    assert "2 computed, 0 already cached" in first.stdout and "model loads: 1" in first.stdout
    again = _qgate_process("baseline", ref, "--policy", policy_file, "-q", cache=cache)
    assert "0 computed, 2 already cached" in again.stdout and "model loads: 0" in again.stdout

    out = tmp_path / "r.json"
    check = _qgate_process(
        "check", *subjects[:2], "--reference", ref, "--policy", policy_file, "--json", out, "-q",
        cache=cache,
    )  # fmt: skip
    assert check.returncode in (0, 1), check.stderr
    counters = read(out).counters
    assert counters["reference_cache_hits"] == 2  # one per dataset (then kept in memory)
    assert counters.get("reference_cache_misses", 0) == 0
    assert counters["model_loads"] == 2  # the subjects only: the reference was never loaded


def test_baseline_with_a_policy_without_reference_checks_caches_nothing(qgate, fake, tmp_path):
    policy = tmp_path / "static.yaml"
    policy.write_text("checks:\n  - use: quant-floor\n    options: {min_bits_per_weight: 3}\n")
    result = qgate("baseline", fake("ref"), "--policy", policy)
    assert result.code == 0 and "nothing to cache" in result.out


def test_baseline_of_a_missing_reference_is_a_usage_error(qgate, policy_file, tmp_path):
    result = qgate("baseline", tmp_path / "nope.gguf", "--policy", policy_file)
    assert result.code == 2 and "model not found" in result.err


def test_merged_shards_keep_provenance_and_verify(qgate, ladder, policy_file, tmp_path):
    _, subjects = ladder
    files = run_shards(qgate, ladder, policy_file, tmp_path)
    merged_path = tmp_path / "merged.json"
    assert qgate("merge", *files, "--json", merged_path, "-q").code == 1
    provenance = read(merged_path).provenance
    assert sorted(Path(s["path"]).name for s in provenance["subjects"]) == sorted(
        s.name for s in subjects
    )
    assert len(provenance["machines"]) == len(files)
    assert qgate("verify", merged_path).code == 0
