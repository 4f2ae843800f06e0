"""The reference cache and the digests are untrusted input (issue 19, classes 3 and 4).

Every test here plants, damages, forges or races what a pull request could write into the cache
directory, and checks that qgate discards it, recomputes, and says so, instead of judging a quant
against it; and that the digests a verdict names are read from the files' bytes in the run.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qgate.cache
from qgate.backend import BackendOptions, TokenScores
from qgate.cache import META, Entry, ReferenceCache, backend_material
from qgate.cached_outputs import (
    SPOT_CHECK_TOLERANCE,
    check_generations,
    disagreement,
    scores_problem,
)
from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.results import RunReport, Verdict
from qgate.runner import Runner

POLICY = """
name: trust
backend: {{n_ctx: 128}}
evaluation: {{chunks: 3, top_k: 8, tail_samples: 16, bootstrap: 200, cache_spot_check: {spot}}}
datasets: [en, code]
checks:
  - use: perplexity
    options: {{max_delta: 0.05}}
  - use: kl-divergence
    options: {{max_mean: 0.05, min_top1_agreement: 0.8}}
"""

GENERATION_POLICY = """
name: gen
evaluation: {{cache_spot_check: {spot}}}
checks:
  - use: repetition
    options: {{max_collapse_increase: 0.05, max_tokens: 48}}
"""

LONG_POLICY = """
name: long
backend: {{n_ctx: 256}}
evaluation: {{bootstrap: 200, top_k: 16, tail_samples: 16, cache_spot_check: {spot}}}
checks:
  - use: long-context
    options: {{context: 1024, kv_cache: [f16], positions_per_bucket: 8, max_bucket_kld: 1.0}}
"""


def run(
    tmp_path: Path,
    template: str,
    reference: Path,
    subject: Path,
    cache: ReferenceCache,
    *,
    spot: int = 0,
    options: BackendOptions | None = None,
) -> RunReport:
    policy_file = tmp_path / f"policy-{spot}.yaml"
    policy_file.write_text(template.format(spot=spot))
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    runner = Runner(
        registry,
        policy,
        reference=str(reference),
        cache=cache,
        backend_options=options,
    )
    return runner.run([str(subject)])


def entry_files(cache_dir: Path, kind: str = "reference-scores") -> dict[str, Path]:
    """The cache's files of ``kind``, by their material's (model digest, text digest)."""
    found = {}
    for path in sorted((cache_dir / "reference").rglob("*.*")):
        material = material_of(path)
        if material["kind"] == kind:
            found[f"{material['model'][:8]}:{material.get('text', '')[:8]}"] = path
    return found


def material_of(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        return json.loads(path.read_text())["material"]
    with np.load(path) as data:
        return json.loads(data[META].tobytes())["material"]


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files if name != META}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def values(report: RunReport) -> list[float | None]:
    return [r.value for r in report.subjects[0].results]


def rejected(report: RunReport) -> list[dict[str, Any]]:
    return report.provenance["reference_cache"]["rejected"]


# --------------------------------------------------------------------------------------------
# class 3: entries are self-describing and checked


def test_a_quants_own_entry_copied_over_the_references_is_discarded(fake, tmp_path):
    """The attack of the issue: the bad quant's baseline renamed to the reference's entry made
    the bad quant pass with one model load. Its material names another model: discarded."""
    ref, bad = fake("ref"), fake("bad", noise=2.0)
    cache = ReferenceCache(tmp_path / "cache")
    run(tmp_path, POLICY, ref, bad, cache)  # the reference's entries
    run(tmp_path, POLICY, bad, bad, cache)  # the bad quant scored as a "reference"
    files = entry_files(tmp_path / "cache")
    ref_digest, bad_digest = sha256_of(ref)[:8], sha256_of(bad)[:8]
    for name, path in files.items():
        if name.startswith(ref_digest):
            path.write_bytes(files[name.replace(ref_digest, bad_digest)].read_bytes())

    report = run(tmp_path, POLICY, ref, bad, cache)
    assert report.counters["reference_cache_rejected"] == 2  # both datasets
    assert report.counters["model_loads"] == 2  # the reference had to be scored again
    assert report.verdict is Verdict.FAIL
    reasons = [r["reason"] for r in rejected(report)]
    assert all("differs in: model" in reason for reason in reasons), reasons
    again = run(tmp_path, POLICY, ref, bad, cache)  # stored again: trusted from now on
    assert again.counters.get("reference_cache_rejected", 0) == 0
    assert again.counters["model_loads"] == 1 and values(again) == values(report)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a stored member: its CRC no longer matches
    path.write_bytes(bytes(data))


def _edit_a_value(path: Path) -> None:
    with np.load(path) as data:
        members = {name: data[name] for name in data.files}
    members["target_logprob"] = members["target_logprob"] * 0.5  # the recorded digest is kept
    np.savez(path.with_suffix(".tmp.npz"), **members)
    path.with_suffix(".tmp.npz").replace(path)


def _without_material(path: Path) -> None:
    np.savez(path.with_suffix(".tmp.npz"), **arrays_of(path))  # as qgate wrote entries before
    path.with_suffix(".tmp.npz").replace(path)


def _compressed(path: Path) -> None:
    """Valid material and digest, members deflated: a zip bomb would look like this."""
    with np.load(path) as data:
        members = {name: data[name] for name in data.files}
    np.savez_compressed(path.with_suffix(".tmp.npz"), **members)
    path.with_suffix(".tmp.npz").replace(path)


def _restore_with(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    """Rewrite the entry through the cache itself: valid material and digest, wrong content."""

    def apply(path: Path) -> None:
        material = material_of(path)
        arrays = arrays_of(path)
        change(arrays)
        ReferenceCache(path.parents[2]).store(Entry(material["kind"], material), arrays)

    return apply


def _wrong_shape(arrays: dict[str, np.ndarray]) -> None:
    arrays["top_ids"] = arrays["top_ids"][:, :, :4]


def _wrong_dtype(arrays: dict[str, np.ndarray]) -> None:
    arrays["tokens"] = arrays["tokens"].astype(np.float32)


def _nan(arrays: dict[str, np.ndarray]) -> None:
    arrays["target_logprob"][0, 0] = np.nan


def _missing_field(arrays: dict[str, np.ndarray]) -> None:
    del arrays["tail_ids"]


def _id_past_the_vocabulary(arrays: dict[str, np.ndarray]) -> None:
    arrays["top_ids"][0, 0, 0] = 258  # the fake vocabulary has 258 tokens


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_truncate, "damaged"),
        (_flip_a_data_byte, "damaged"),
        (_edit_a_value, "does not match its recorded sha256"),
        (_without_material, "records no material"),
        (_compressed, "compressed members"),
        (_restore_with(_wrong_shape), "top_ids has 4 entries on axis 2, not 8"),
        (_restore_with(_wrong_dtype), "tokens is float32, not int"),
        (_restore_with(_nan), "non-finite"),
        (_restore_with(_missing_field), "holds the arrays"),
        (_restore_with(_id_past_the_vocabulary), "token ids outside [0, 258)"),
    ],
    ids=[
        "truncated",
        "crc",
        "edited",
        "no-material",
        "compressed",
        "shape",
        "dtype",
        "nan",
        "missing-array",
        "vocabulary",
    ],
)
def test_a_damaged_entry_is_recomputed_and_reported_never_an_error_forever(
    fake, tmp_path, damage, reason
):
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    cache = ReferenceCache(tmp_path / "cache")
    first = run(tmp_path, POLICY, ref, sub, cache)
    damage(next(iter(entry_files(tmp_path / "cache").values())))

    second = run(tmp_path, POLICY, ref, sub, cache)
    assert second.counters["reference_cache_rejected"] == 1
    assert second.counters["model_loads"] == 2
    assert reason in rejected(second)[0]["reason"]
    assert values(second) == values(first)
    assert all(r.verdict is not Verdict.ERROR for r in second.subjects[0].results)
    third = run(tmp_path, POLICY, ref, sub, cache)
    assert third.counters.get("reference_cache_rejected", 0) == 0
    assert third.counters["model_loads"] == 1


def test_every_setting_that_changes_the_numbers_names_another_entry(monkeypatch):
    base = BackendOptions()
    entry = Entry.of("reference-scores", model="m", **backend_material("gguf", base))
    changed = [
        replace(base, kv_cache="q8_0"),
        replace(base, gpu_layers=-1),
        replace(base, seed=7),
        replace(base, batch_size=64),
        replace(base, n_ctx=1024),
        replace(base, extra={"dtype": "bfloat16"}),
        replace(base, extra={"device": "cuda:0"}),
    ]
    keys = {
        Entry.of("reference-scores", model="m", **backend_material("gguf", o)).key for o in changed
    }
    assert len(keys) == len(changed) and entry.key not in keys
    assert Entry.of("reference-scores", model="m", **backend_material("hf", base)).key != entry.key
    # thread count only reorders float additions: a runner with other cores still hits
    same = Entry.of(
        "reference-scores", model="m", **backend_material("gguf", replace(base, threads=3))
    )
    assert same.key == entry.key
    versions = dict(qgate.cache.library_versions())
    assert set(versions) >= {"llama-cpp-python", "transformers", "torch", "exllamav2", "gptqmodel"}
    monkeypatch.setattr(qgate.cache, "library_versions", lambda: {**versions, "torch": "9.9"})
    upgraded = Entry.of("reference-scores", model="m", **backend_material("gguf", base))
    assert upgraded.key != entry.key


def test_backend_extra_and_kv_cache_miss_the_cache_of_other_settings(fake, tmp_path):
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    cache = ReferenceCache(tmp_path / "cache")
    run(tmp_path, POLICY, ref, sub, cache)
    for options in (
        BackendOptions(n_ctx=128, extra={"dtype": "bfloat16"}),
        BackendOptions(n_ctx=128, kv_cache="q8_0"),
    ):
        other = run(tmp_path, POLICY, ref, sub, cache, options=options)
        assert other.counters["reference_cache_misses"] == 2, options


def test_the_run_records_what_it_discarded(qgate, fake, tmp_path):
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(POLICY.format(spot=0))
    cache_dir = tmp_path / "qgate-cache"  # the tests' QGATE_CACHE_DIR
    args = ("check", sub, "--reference", ref, "--policy", policy_file, "-q")
    assert qgate(*args).code == 0
    _truncate(next(iter(entry_files(cache_dir).values())))
    out = tmp_path / "r.json"
    result = qgate(*args[:-1], "--json", out)
    assert result.code == 0, result
    assert "discarded the reference-scores entry" in result.err and "recomputing" in result.err
    data = json.loads(out.read_text())
    assert data["counters"]["reference_cache_rejected"] == 1
    record = data["provenance"]["reference_cache"]
    assert record["directory"] == str(cache_dir) and record["rejected"][0]["reason"].startswith(
        "damaged"
    )


# --------------------------------------------------------------------------------------------
# generations


def test_edited_or_foreign_generations_are_discarded(fake, tmp_path):
    ref, sub = fake("ref"), fake("sub")
    cache = ReferenceCache(tmp_path / "cache")
    first = run(tmp_path, GENERATION_POLICY, ref, sub, cache)
    (path,) = entry_files(tmp_path / "cache", "generations").values()
    envelope = json.loads(path.read_text())
    envelope["content"][0]["text"] = "forged"
    path.write_text(json.dumps(envelope))
    second = run(tmp_path, GENERATION_POLICY, ref, sub, cache)
    assert second.counters["reference_cache_rejected"] == 1
    assert "does not match its recorded sha256" in rejected(second)[0]["reason"]
    assert second.counters["generation_cache_misses"] == 1 and values(second) == values(first)
    # a lone surrogate is no model's output (and would break every reporter): discarded too
    material = material_of(path)
    document = json.loads(path.read_text())["content"]
    document[0]["text"] = "\ud800"
    cache.store_json(Entry(material["kind"], material), document)
    third = run(tmp_path, GENERATION_POLICY, ref, sub, cache)
    assert "no valid text" in rejected(third)[0]["reason"]
    # the key holds the KV cache type: generations under q8_0 are not those under f16
    other = run(
        tmp_path, GENERATION_POLICY, ref, sub, cache, options=BackendOptions(kv_cache="q8_0")
    )
    assert other.counters["generation_cache_misses"] == 1


def test_an_oversized_generation_entry_is_not_read_into_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(qgate.cache, "MAX_DOCUMENT_BYTES", 1000)
    cache = ReferenceCache(tmp_path)
    entry = Entry.of("generations", model="m")
    cache.store_json(entry, [{"text": "x" * 2000}])
    assert cache.load_json(entry) is None
    assert "larger than" in cache.rejected[0]["reason"]


def test_the_spot_check_catches_forged_generations(fake, tmp_path):
    ref, sub = fake("ref"), fake("sub")
    cache = ReferenceCache(tmp_path / "cache")
    first = run(tmp_path, GENERATION_POLICY, ref, sub, cache)
    (path,) = entry_files(tmp_path / "cache", "generations").values()
    material = material_of(path)
    document = json.loads(path.read_text())["content"]
    for item in document:  # every answer replaced by a loop, digest recomputed
        item.update(text="la la la", tokens=[108, 97, 32] * 3, finish_reason="length")
    cache.store_json(Entry(material["kind"], material), document)
    checked = run(tmp_path, GENERATION_POLICY, ref, sub, cache, spot=2)
    assert checked.counters["reference_cache_rejected"] == 1
    assert "spot-check of prompt" in rejected(checked)[0]["reason"]
    assert values(checked) == values(first)
    agreed = run(tmp_path, GENERATION_POLICY, ref, sub, cache, spot=2)
    assert agreed.counters.get("reference_cache_rejected", 0) == 0
    assert agreed.counters["spot_check_generations"] == 2
    assert agreed.provenance["reference_cache"]["spot_checks"][0]["agreed"] is True


# --------------------------------------------------------------------------------------------
# the spot-check


def test_the_spot_check_catches_an_entry_forged_with_a_valid_digest(fake, tmp_path):
    """A forger who rewrites the digest passes every check a read can make alone; re-scoring a
    few chunks with the real reference does not let it through."""
    ref, bad = fake("ref"), fake("bad", noise=2.0)
    cache = ReferenceCache(tmp_path / "cache")
    run(tmp_path, POLICY, ref, bad, cache)
    run(tmp_path, POLICY, bad, bad, cache)
    files = entry_files(tmp_path / "cache")
    ref_digest, bad_digest = sha256_of(ref)[:8], sha256_of(bad)[:8]
    for name, path in files.items():
        if name.startswith(ref_digest):
            forged = arrays_of(files[name.replace(ref_digest, bad_digest)])
            material = material_of(path)
            cache.store(Entry(material["kind"], material), forged)

    checked = run(tmp_path, POLICY, ref, bad, cache, spot=1)
    assert checked.counters["reference_cache_rejected"] == 2
    assert all("spot-check of chunk" in r["reason"] for r in rejected(checked))
    assert checked.verdict is Verdict.FAIL
    records = checked.provenance["reference_cache"]["spot_checks"]
    assert [r["agreed"] for r in records] == [False, False]


def test_a_trusted_cache_passes_the_spot_check_and_n_0_never_loads_the_reference(fake, tmp_path):
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    cache = ReferenceCache(tmp_path / "cache")
    first = run(tmp_path, POLICY, ref, sub, cache)
    warm = run(tmp_path, POLICY, ref, sub, cache)
    assert warm.counters["model_loads"] == 1  # N = 0: the reference is never loaded
    assert "spot_check_passes" not in warm.counters
    checked = run(tmp_path, POLICY, ref, sub, cache, spot=2)
    assert checked.counters.get("reference_cache_rejected", 0) == 0
    assert checked.counters["model_loads"] == 2
    assert checked.counters["spot_check_passes"] == 4  # 2 chunks of each of 2 entries
    assert checked.counters["reference_cache_hits"] == 2
    records = checked.provenance["reference_cache"]["spot_checks"]
    assert len(records) == 2 and all(r["agreed"] and len(r["chunks"]) == 2 for r in records)
    assert all(r["max_abs_diff"] <= SPOT_CHECK_TOLERANCE for r in records)
    assert values(checked) == values(first)


def _scores(target: list[float], tops: list[list[float]], ids: list[list[int]]) -> TokenScores:
    top_logprobs = np.array(tops, dtype=np.float32)
    return TokenScores(
        start=1,
        target_logprob=np.array(target),
        top_ids=np.array(ids, dtype=np.int32),
        top_logprobs=top_logprobs,
        gathered_logprobs=top_logprobs.copy(),
    )


def test_the_spot_check_tolerance_allows_rounding_and_near_ties_only():
    cached = {
        "target_logprob": np.array([-1.0, -2.0]),
        "top_ids": np.array([[5, 6], [7, 8]], dtype=np.int32),
        "top_logprobs": np.array([[-0.5, -1.5], [-0.7, -0.7001]], dtype=np.float32),
        "tail_logprobs": np.zeros((2, 0), dtype=np.float32),
    }
    same = _scores([-1.0, -2.0], [[-0.5, -1.5], [-0.7, -0.7001]], [[5, 6], [7, 8]])
    assert disagreement(cached, same, SPOT_CHECK_TOLERANCE) == (None, 0.0)
    rounding = _scores([-1.00002, -2.0], [[-0.5, -1.5], [-0.7, -0.7001]], [[5, 6], [7, 8]])
    assert disagreement(cached, rounding, SPOT_CHECK_TOLERANCE)[0] is None
    # the top two of the second row are tied within the tolerance: their order may flip
    tie = _scores([-1.0, -2.0], [[-0.5, -1.5], [-0.7, -0.7001]], [[5, 6], [8, 7]])
    tie.gathered_logprobs = np.array([[-0.5, -1.5], [-0.7001, -0.7]], dtype=np.float32)
    assert disagreement(cached, tie, SPOT_CHECK_TOLERANCE)[0] is None
    moved = _scores([-1.0, -2.003], [[-0.5, -1.5], [-0.7, -0.7001]], [[5, 6], [7, 8]])
    problem, worst = disagreement(cached, moved, SPOT_CHECK_TOLERANCE)
    assert problem is not None and "target log-probabilities" in problem and worst > 2e-3
    flipped = _scores([-1.0, -2.0], [[-0.5, -1.5], [-0.7, -0.7001]], [[6, 5], [7, 8]])
    assert "most likely token" in str(disagreement(cached, flipped, SPOT_CHECK_TOLERANCE)[0])


# --------------------------------------------------------------------------------------------
# long-context entries get the same checks


def test_long_context_entries_are_verified_and_spot_checked(fake, tmp_path):
    ref, sub = fake("ref"), fake("sub", kv_decay=0.1)
    cache = ReferenceCache(tmp_path / "cache")
    first = run(tmp_path, LONG_POLICY, ref, sub, cache)
    (path,) = entry_files(tmp_path / "cache", "long-context-reference").values()
    warm = run(tmp_path, LONG_POLICY, ref, sub, cache)
    assert warm.counters["reference_cache_hits"] == 1 and warm.counters["model_loads"] == 1

    _truncate(path)
    damaged = run(tmp_path, LONG_POLICY, ref, sub, cache)
    assert damaged.counters["reference_cache_rejected"] == 1
    assert damaged.counters["reference_cache_misses"] == 1 and values(damaged) == values(first)

    material, arrays = material_of(path), arrays_of(path)
    # the reference "never finds the pass keys" (another token ranked first at every key token):
    # retrieval would then have no signal, so any drop would pass
    at_keys = np.isin(arrays["positions"], np.concatenate([np.arange(*k) for k in arrays["keys"]]))
    arrays["top_ids"][at_keys] = arrays["top_ids"][at_keys][:, ::-1]
    arrays["top_logprobs"] = arrays["top_logprobs"] - 0.01
    cache.store(Entry(material["kind"], material), arrays)
    checked = run(tmp_path, LONG_POLICY, ref, sub, cache, spot=2)
    assert checked.counters["reference_cache_rejected"] == 1
    assert "spot-check" in rejected(checked)[0]["reason"]
    assert values(checked) == values(first)
    agreed = run(tmp_path, LONG_POLICY, ref, sub, cache, spot=2)
    assert agreed.counters.get("reference_cache_rejected", 0) == 0
    record = agreed.provenance["reference_cache"]["spot_checks"][0]
    # the whole pass is replayed: 8 text positions per bucket and every pass-key token
    assert record["agreed"] and record["positions"] == len(arrays["positions"]) > 16
    assert record["sequence"] == 0 and record["max_abs_diff"] <= SPOT_CHECK_TOLERANCE


# --------------------------------------------------------------------------------------------
# files git tracks in the repository under test


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_entries_git_tracks_are_never_read_nor_overwritten(fake, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    cache = ReferenceCache(repo / ".qgate-cache")
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    run(tmp_path, POLICY, ref, sub, cache)
    untracked = run(tmp_path, POLICY, ref, sub, cache)  # the run's own entries: read
    assert untracked.counters["model_loads"] == 1

    _git(repo, "add", "-f", ".qgate-cache")  # what a pull request that commits them does
    before = {p: p.read_bytes() for p in entry_files(repo / ".qgate-cache").values()}
    calls = []
    real_run = subprocess.run

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(qgate.cache.subprocess, "run", counting)
    tracked = run(tmp_path, POLICY, ref, sub, cache)
    # two datasets, each with the reference's scores and their noise floor
    assert tracked.counters["reference_cache_rejected"] == 4
    assert tracked.counters["model_loads"] == 2
    assert all("git tracks this file" in r["reason"] for r in rejected(tracked))
    assert len(calls) == 1 and "ls-files" in calls[0]  # once per run
    assert {p: p.read_bytes() for p in before} == before  # the repository's files untouched


def test_without_git_a_cache_inside_a_work_tree_is_not_read(fake, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    cache = ReferenceCache(repo / "cache")
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    run(tmp_path, POLICY, ref, sub, cache)
    monkeypatch.setattr(qgate.cache.shutil, "which", lambda name: None)
    report = run(tmp_path, POLICY, ref, sub, cache)
    # two datasets, each with the reference's scores and their noise floor
    assert report.counters["reference_cache_rejected"] == 4 and report.counters["model_loads"] == 2
    assert "git is not installed" in report.provenance["reference_cache"]["untrusted_directory"]


def test_outside_a_work_tree_git_is_not_even_asked(fake, tmp_path, monkeypatch):
    def no_git(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(qgate.cache.subprocess, "run", no_git)
    cache = ReferenceCache(tmp_path / "cache")
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    run(tmp_path, POLICY, ref, sub, cache)
    assert run(tmp_path, POLICY, ref, sub, cache).counters["model_loads"] == 1


# --------------------------------------------------------------------------------------------
# concurrent writers

#: every writer looks like the same process, as two containers sharing a PID did
SAME_PID = 4242
VERSIONS = 6


def _version(index: int) -> dict[str, np.ndarray]:
    return {"a": np.full((128, 512), index, dtype=np.float32), "b": np.arange(index + 1)}


def _intact(arrays: dict[str, np.ndarray] | None) -> bool:
    if arrays is None:
        return False
    index = int(arrays["a"][0, 0])
    return all(np.array_equal(arrays[k], v) for k, v in _version(index).items())


def _write_versions(directory: Path, writer: int, rounds: int) -> None:
    os.getpid = lambda: SAME_PID  # type: ignore[assignment]  # in a forked child only
    cache = ReferenceCache(directory)
    for round_ in range(rounds):
        cache.store(Entry.of("race"), _version((writer + round_) % VERSIONS))


def test_racing_writers_never_leave_a_corrupt_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: SAME_PID)
    cache = ReferenceCache(tmp_path)
    entry = Entry.of("race")
    done = threading.Event()
    reads: list[bool] = []

    def read() -> None:
        while not done.is_set():
            got = cache.load(entry)
            if got is not None:
                reads.append(_intact(got))

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [
        threading.Thread(target=lambda w=w: [cache.store(entry, _version(w)) for _ in range(15)])
        for w in range(VERSIONS)
    ]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert reads and all(reads)
    assert cache.instruments.counters.get("reference_cache_rejected", 0) == 0

    # processes too (forked: each believes it has the same PID)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_write_versions, args=(tmp_path, w, 10)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert all(p.exitcode == 0 for p in processes)
    assert _intact(cache.load(entry))
    assert cache.instruments.counters.get("reference_cache_rejected", 0) == 0
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # nothing left over


def test_entries_get_the_mode_of_any_new_file_not_a_private_one(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    cache = ReferenceCache(tmp_path)
    cache.store(Entry.of("mode"), _version(1))
    (path,) = (tmp_path / "reference").rglob("*.npz")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------------------------
# class 4: digests come from the bytes, never from an index in the cache directory


def test_a_planted_digest_index_cannot_change_what_a_verdict_names(qgate, fake, tmp_path):
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    cache_dir = tmp_path / "qgate-cache"  # the tests' QGATE_CACHE_DIR
    cache_dir.mkdir()
    planted = {
        str(path.resolve()): {
            "size": path.stat().st_size,
            "mtime_ns": path.stat().st_mtime_ns,
            "sha256": "0" * 64,
        }
        for path in (ref, sub)
    }
    (cache_dir / "digests.json").write_text(json.dumps(planted))
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(POLICY.format(spot=0))
    out, attestation = tmp_path / "r.json", tmp_path / "a.json"
    result = qgate(
        "check", sub, "--reference", ref, "--policy", policy_file, "--json", out,
        "--attestation", attestation, "-q",
    )  # fmt: skip
    assert result.code == 0, result
    provenance = json.loads(out.read_text())["provenance"]
    assert provenance["subjects"][0]["sha256"] == sha256_of(sub)
    assert provenance["reference"]["sha256"] == sha256_of(ref)
    statement = json.loads(attestation.read_text())
    assert statement["subject"][0]["digest"]["sha256"] == sha256_of(sub)
    assert "0" * 64 not in attestation.read_text()
    # the cache entries are keyed by the true digest as well
    assert {m["model"] for m in map(material_of, entry_files(cache_dir).values())} == {
        sha256_of(ref)
    }


# --------------------------------------------------------------------------------------------
# fuzzing entries: any mutation is either rejected or reads back exactly what was stored

FUZZ = settings(
    max_examples=int(os.environ.get("QGATE_FUZZ_EXAMPLES", "150")),
    deadline=2000,
    derandomize="QGATE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
FUZZ_DIR = Path(tempfile.mkdtemp(prefix="qgate-cache-fuzz-"))
atexit.register(shutil.rmtree, FUZZ_DIR, ignore_errors=True)
FUZZ_ENTRY = Entry.of("reference-scores", model="m", text="t")
VALIDATE = functools.partial(scores_problem, n_ctx=128, chunks=3, top_k=8, tail_samples=16)


def _valid_scores() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    logprobs = -np.sort(rng.exponential(size=(2, 63, 8)), axis=-1).astype(np.float32)
    return {
        "tokens": rng.integers(0, 258, size=(3, 128)).astype(np.int32),
        "target_logprob": -rng.exponential(size=(2, 63)),
        "top_ids": rng.integers(0, 258, size=(2, 63, 8)).astype(np.int32),
        "top_logprobs": logprobs,
        "tail_ids": rng.integers(0, 258, size=(2, 63, 16)).astype(np.int32),
        "tail_logprobs": -rng.exponential(size=(2, 63, 16)).astype(np.float32) - 3,
    }


def _stored_bytes(suffix: str) -> tuple[ReferenceCache, Path, bytes]:
    cache = ReferenceCache(FUZZ_DIR)
    if suffix == ".npz":
        cache.store(FUZZ_ENTRY, _valid_scores())
    else:
        cache.store_json(FUZZ_ENTRY, [{"text": "a", "tokens": [1], "finish_reason": "eos",
                                       "prompt_tokens": 2, "seconds": 0.1}])  # fmt: skip
    path = FUZZ_DIR / "reference" / FUZZ_ENTRY.key[:2] / f"{FUZZ_ENTRY.key}{suffix}"
    return cache, path, path.read_bytes()


def _mutate(data: st.DataObject, original: bytes) -> bytes:
    mutated = bytearray(original)
    if data.draw(st.booleans(), label="truncate"):
        return bytes(mutated[: data.draw(st.integers(0, len(mutated) - 1), label="length")])
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(mutated) - 1), label="at")
        mutated[at] = data.draw(st.integers(0, 255), label="byte")
    return bytes(mutated)


@FUZZ
@given(st.data())
def test_mutated_score_entries_are_rejected_or_exact(data: st.DataObject) -> None:
    cache, path, original = _stored_bytes(".npz")
    mutated = _mutate(data, original)
    path.write_bytes(mutated)
    arrays = cache.load(FUZZ_ENTRY, validate=VALIDATE)
    if arrays is None:
        assert cache.instruments.counters["reference_cache_rejected"] == 1
    else:  # only a mutation that changed nothing read (a zip's slack bytes): the same content
        assert qgate.cache.arrays_digest(arrays) == qgate.cache.arrays_digest(_valid_scores())


@FUZZ
@given(st.data())
def test_mutated_generation_entries_are_rejected_or_exact(data: st.DataObject) -> None:
    cache, path, original = _stored_bytes(".json")
    path.write_bytes(_mutate(data, original))
    document = cache.load_json(FUZZ_ENTRY, validate=lambda d: check_generations(d, 1))
    if document is not None:
        assert document[0]["tokens"] == [1] and document[0]["text"] == "a"
