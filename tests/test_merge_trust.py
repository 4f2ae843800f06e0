"""`qgate merge` joins only results that belong together (issue 19, classes 5 and 6).

Each case here merged to PASS before: copies of one run counted as several, shards of different
runs, and results that measured different things (another policy under the same ``name:``,
another reference, other evaluation text, other scoring settings). Each is now a usage error
(exit 2) that names the files and says what differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qgate.results import RunReport

POLICY = """
name: trust
backend: {n_ctx: 128}
evaluation: {chunks: 2, top_k: 8, bootstrap: 200}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: kl-divergence
    options: {max_mean: 0.05, min_top1_agreement: 0.8}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "trust.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def good(fake) -> list[Path]:
    """Two quants that pass the policy."""
    return [
        fake(name, noise=0.01, metadata={"bits_per_weight": bits})
        for name, bits in (("q8", 8.5), ("q6", 6.6))
    ]


def check(qgate, subjects, out: Path, *, reference: Path, policy: Path, extra=()) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    result = qgate(
        "check", *subjects, "--reference", reference, "--policy", policy, "--json", out, "-q",
        *extra,
    )  # fmt: skip
    assert result.code == 0, result
    return out


def shards(qgate, subjects, directory: Path, *, reference, policy, run_id="run-1", count=2):
    return [
        check(
            qgate,
            subjects,
            directory / f"shard-{k}.json",
            reference=reference,
            policy=policy,
            extra=("--shard", f"{k}/{count}", "--run-id", run_id),
        )
        for k in range(1, count + 1)
    ]


def edit(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


# -- class 5: copies and other runs ------------------------------------------------------------
def test_copies_of_one_whole_run_are_refused(qgate, fake, good, policy_file, tmp_path):
    """Four copies of one passing results file merged to PASS, as if four runs agreed."""
    original = check(qgate, good, tmp_path / "run.json", reference=fake("ref"), policy=policy_file)
    copies = [original]
    for k in range(2, 5):
        copies.append(tmp_path / f"copy-{k}" / "results.json")
        copies[-1].parent.mkdir()
        shutil.copyfile(original, copies[-1])
    result = qgate("merge", *copies, "-q")
    assert result.code == 2, result
    assert "the same results given more than once" in result.err
    assert all(str(path) in result.err for path in copies)


def test_shards_of_different_runs_are_refused(qgate, fake, good, policy_file, tmp_path):
    ref = fake("ref")
    mine = shards(qgate, good, tmp_path / "mine", reference=ref, policy=policy_file)
    theirs = shards(qgate, good, tmp_path / "theirs", reference=ref, policy=policy_file, run_id="2")
    assert qgate("merge", *mine, "-q").code == 0  # one run's shards merge
    result = qgate("merge", mine[0], theirs[1], "-q")
    assert result.code == 2, result
    assert "the shards come from different runs" in result.err
    assert f"run 'run-1': {mine[0]}" in result.err and f"run '2': {theirs[1]}" in result.err


def test_a_file_without_an_invocation_id_is_refused(qgate, fake, good, policy_file, tmp_path):
    ref = fake("ref")
    first = check(qgate, good[:1], tmp_path / "a.json", reference=ref, policy=policy_file)
    second = check(qgate, good[1:], tmp_path / "b.json", reference=ref, policy=policy_file)
    edit(second, lambda data: data.update(invocation_id=""))
    result = qgate("merge", first, second, "-q")
    assert result.code == 2, result
    assert f"{second}: no invocation id" in result.err


def test_the_merged_results_are_a_new_result_of_the_same_run(
    qgate, fake, good, policy_file, tmp_path
):
    ref = fake("ref")
    parts = shards(qgate, good, tmp_path / "s", reference=ref, policy=policy_file)
    merged = tmp_path / "merged.json"
    assert qgate("merge", *parts, "--json", merged, "-q").code == 0
    report = RunReport.from_dict(json.loads(merged.read_text()))
    assert report.run_id == "run-1"
    ids = {json.loads(p.read_text())["invocation_id"] for p in parts}
    assert len(report.invocation_id) == 32 and report.invocation_id not in ids
    assert report.provenance["policy"]["sha256"]  # so a merged file can be merged again
    other = check(
        qgate, [fake("q7", noise=0.01)], tmp_path / "o.json", reference=ref, policy=policy_file
    )
    assert qgate("merge", merged, other, "-q").code == 0
    assert qgate("merge", merged, merged, "-q").code == 2


# -- class 6: different measurements -----------------------------------------------------------
def test_shards_scored_against_different_references_are_refused(
    qgate, fake, good, policy_file, tmp_path
):
    """Same policy, same split, same run id: only the reference differs (another file, whose
    outputs are close enough that every shard passes on its own)."""
    first = shards(qgate, good, tmp_path / "a", reference=fake("ref"), policy=policy_file)
    other = shards(
        qgate, good, tmp_path / "b", reference=fake("ref2", noise=0.001), policy=policy_file
    )
    result = qgate("merge", first[0], other[1], "-q")
    assert result.code == 2, result
    assert "the results measured different things" in result.err
    assert "reference differs" in result.err
    assert str(first[0]) in result.err and str(other[1]) in result.err


def test_runs_judged_under_different_policies_with_one_name_are_refused(
    qgate, fake, good, policy_file, tmp_path
):
    """Two policies both called ``trust``: the name matched, so the merge passed."""
    strict = tmp_path / "strict" / "trust.yaml"
    strict.parent.mkdir()
    strict.write_text(POLICY.replace("max_delta: 0.05", "max_delta: 0.5"))
    ref = fake("ref")
    first = check(qgate, good[:1], tmp_path / "a.json", reference=ref, policy=policy_file)
    second = check(qgate, good[1:], tmp_path / "b.json", reference=ref, policy=strict)
    result = qgate("merge", first, second, "-q")
    assert result.code == 2, result
    assert "policy digest differs" in result.err
    assert str(first) in result.err and str(second) in result.err


def test_runs_on_different_text_are_refused(qgate, fake, good, policy_file, tmp_path):
    text = tmp_path / "legal.txt"
    text.write_text("The party of the first part agrees to the terms. " * 200)
    ref = fake("ref")
    first = check(qgate, good[:1], tmp_path / "a.json", reference=ref, policy=policy_file)
    second = check(
        qgate, good[1:], tmp_path / "b.json", reference=ref, policy=policy_file,
        extra=("--dataset", f"legal={text}"),
    )  # fmt: skip
    result = qgate("merge", first, second, "-q")
    assert result.code == 2, result
    assert "datasets differs" in result.err and "legal=" in result.err


def test_runs_with_different_scoring_settings_are_refused(qgate, fake, good, policy_file, tmp_path):
    ref = fake("ref")
    first = check(qgate, good[:1], tmp_path / "a.json", reference=ref, policy=policy_file)
    threads = check(
        qgate, good[1:], tmp_path / "t.json", reference=ref, policy=policy_file,
        extra=("--threads", "3"),
    )  # fmt: skip
    assert qgate("merge", first, threads, "-q").code == 0  # speed only: the numbers are the same
    second = check(
        qgate, good[1:], tmp_path / "b.json", reference=ref, policy=policy_file,
        extra=("--n-ctx", "64"),
    )  # fmt: skip
    result = qgate("merge", first, second, "-q")
    assert result.code == 2, result
    assert "backend options differs" in result.err


def test_a_file_without_provenance_cannot_be_merged(qgate, fake, good, policy_file, tmp_path):
    ref = fake("ref")
    first = check(qgate, good[:1], tmp_path / "a.json", reference=ref, policy=policy_file)
    second = check(qgate, good[1:], tmp_path / "b.json", reference=ref, policy=policy_file)
    edit(second, lambda data: data.update(provenance={}))
    result = qgate("merge", first, second, "-q")
    assert result.code == 2, result
    assert f"{second}: the results record no provenance" in result.err


def test_an_interrupted_shard_is_incomplete_not_a_different_reference(
    qgate, fake, good, policy_file, tmp_path
):
    """An interrupted run does not hash its files: its unknown reference digest is not a
    mismatch, and the merge reports the shard as incomplete (exit 1)."""
    parts = shards(qgate, good, tmp_path / "s", reference=fake("ref"), policy=policy_file)

    def interrupted(data):
        data["incomplete"] = True
        data["provenance"]["reference"]["sha256"] = None

    edit(parts[0], interrupted)
    result = qgate("merge", *parts, "-q")
    assert result.code == 1, result
    assert "shard 1/2 incomplete" in result.err
