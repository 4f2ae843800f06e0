"""The measurement's own noise floor, the KLD tail and the tokens the models disagree on most.

The floor is the reference against itself: measured whenever the reference is scored live,
cached with its scores (verified like every entry), read back without loading the reference,
reported beside every KLD statistic, and a limit below it is refused. The fake backend is
deterministic, so its floor is exactly 0; the ``shape-fake`` backend below rounds differently
for passes that ask for a different number of rows, as real kernels do, so its floor is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgate.backend import BackendOptions
from qgate.cache import META
from qgate.datasets import load_dataset
from qgate.engine.noise_floor import FLOOR_CHUNKS, as_floor, floor_problem
from qgate.hookspecs import hookimpl
from qgate.policy.model import DatasetSpec
from qgate.results import RunReport, Verdict
from qgate.scoring.paired import NoiseFloor, PairedScores
from qgate.scoring.sequence import LogitsBatch
from qgate.testing import FakeBackend, FakeModel, read_knobs

PLUGIN = "tests.test_noise_floor"


class ShapeSensitiveModel(FakeModel):
    """A fake model whose logits move by ``extra.shape_noise`` with the number of rows a pass
    asks for: a kernel whose reduction order depends on the batch shape."""

    def scored_logits(
        self, tokens: Sequence[int], scored: np.ndarray
    ) -> Iterable[Sequence[LogitsBatch]]:
        noise = float(self.options.extra.get("shape_noise", 0.0))
        wobble = noise * np.cos(0.37 * len(scored) + np.arange(self.n_vocab)).astype(np.float32)
        for group in super().scored_logits(tokens, scored):
            yield [(at, logits + wobble) for at, logits in group]


class ShapeSensitiveBackend(FakeBackend):
    name = "shape-fake"
    description = "fake models whose numbers depend on the request's shape (tests only)"

    def detect(self, path: Path) -> float:
        return 0.0  # chosen with --backend only; the fake backend claims the files

    def load(self, path: Path, options: BackendOptions) -> FakeModel:
        return ShapeSensitiveModel(self.inspect(path), read_knobs(path), options)


@hookimpl
def qgate_backends() -> list[Any]:
    return [ShapeSensitiveBackend()]


POLICY = """
name: floor
backend: {{n_ctx: 128, extra: {{shape_noise: {noise}}}}}
evaluation: {{chunks: 3, top_k: 8, tail_samples: 16, bootstrap: 200, cache_spot_check: {spot}}}
datasets: [en, code]
checks:
  - use: kl-divergence
    options: {options}
"""


def check(
    qgate: Any,
    tmp_path: Path,
    subject: Path,
    reference: Path,
    *,
    options: str = "{max_mean: 0.5}",
    noise: float = 0.0,
    spot: int = 0,
    backend: str = "fake",
) -> tuple[int, RunReport]:
    policy = tmp_path / "floor.yaml"
    policy.write_text(POLICY.format(options=options, noise=noise, spot=spot))
    out = tmp_path / "r.json"
    result = qgate(
        "check", subject, "--reference", reference, "--policy", policy, "--backend", backend,
        "--json", out, "--html", tmp_path / "r.html", "-q",
    )  # fmt: skip
    assert result.code in (0, 1, 2), result
    return result.code, RunReport.from_dict(json.loads(out.read_text()))


def kld_results(report: RunReport) -> dict[str, Any]:
    return {r.metric: r for r in report.subjects[0].results if r.check == "kl-divergence"}


def floor_files(cache_dir: Path) -> list[Path]:
    found = []
    for path in sorted((cache_dir / "reference").rglob("*.npz")):
        with np.load(path) as data:
            if json.loads(data[META].tobytes())["material"]["kind"] == "noise-floor":
                found.append(path)
    return found


@pytest.fixture
def shape_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", PLUGIN)


# --------------------------------------------------------------------------------------------
# the floor


def test_two_passes_that_agree_exactly_give_a_floor_of_zero_shown_beside_every_kld(
    qgate, fake, tmp_path
):
    _, report = check(qgate, tmp_path, fake("sub", noise=0.3), fake("ref"))
    results = kld_results(report)
    assert {"kld_mean", "kld_p99", "kld_p999"} <= set(results)
    floor = results["kld_mean"].details["noise_floor"]
    assert floor["measured"] and floor["mean"] == 0 and floor["max"] == 0
    assert floor["top1_agreement"] == 1 and floor["max_abs_logprob_diff"] == 0
    # two chunks per dataset, every other scored position of each
    assert floor["chunks"] == 2 * FLOOR_CHUNKS and floor["tokens"] == 2 * FLOOR_CHUNKS * 32
    for result in results.values():
        assert "noise floor 0 (the reference against itself)" in result.message
    assert report.counters["noise_floor_passes"] == 2 * FLOOR_CHUNKS
    titles = [t.title for t in results["kld_mean"].figures.tables]
    assert any(t.startswith("Noise floor: the reference against itself") for t in titles)
    assert "Noise floor: the reference against itself" in (tmp_path / "r.html").read_text()


def test_the_floor_comes_from_the_cache_without_loading_the_reference(
    qgate, fake, tmp_path, shape_plugin
):
    sub, ref = fake("sub", noise=0.3), fake("ref")
    _, first = check(qgate, tmp_path, sub, ref, noise=0.05, backend="shape-fake")
    _, second = check(qgate, tmp_path, sub, ref, noise=0.05, backend="shape-fake")
    assert first.counters["model_loads"] == 2 and second.counters["model_loads"] == 1
    assert "noise_floor_passes" not in second.counters
    before, after = (kld_results(r)["kld_mean"].details["noise_floor"] for r in (first, second))
    assert after == before and after["mean"] > 0


def test_a_damaged_floor_is_discarded_and_not_bought_with_a_reference_load(
    qgate, fake, tmp_path, shape_plugin
):
    sub, ref = fake("sub", noise=0.3), fake("ref")
    check(qgate, tmp_path, sub, ref, noise=0.05, backend="shape-fake")
    cache_dir = tmp_path / "qgate-cache"
    for path in floor_files(cache_dir):  # a flipped byte in the stored floor
        data = bytearray(path.read_bytes())
        data[-200] ^= 0xFF
        path.write_bytes(bytes(data))
    _, report = check(qgate, tmp_path, sub, ref, noise=0.05, backend="shape-fake")
    assert report.counters["reference_cache_rejected"] == 2
    assert report.counters["model_loads"] == 1  # the scores still came from the cache
    result = kld_results(report)["kld_mean"]
    assert result.verdict is Verdict.PASS and "noise floor not measured" in result.message
    floor = result.details["noise_floor"]
    assert not floor["measured"] and "would load the reference" in floor["missing"]["en"]
    # with a spot-check the reference is loaded anyway: the floor is measured again and stored
    _, checked = check(qgate, tmp_path, sub, ref, noise=0.05, spot=1, backend="shape-fake")
    assert checked.counters["noise_floor_passes"] == 2 * FLOOR_CHUNKS
    assert kld_results(checked)["kld_mean"].details["noise_floor"]["measured"]


def test_a_limit_below_the_floor_is_refused_with_the_floor_in_the_message(
    qgate, fake, tmp_path, shape_plugin
):
    sub, ref = fake("sub", noise=0.3), fake("ref")
    code, report = check(
        qgate, tmp_path, sub, ref, options="{max_mean: 1.0e-9}", noise=0.05, backend="shape-fake"
    )
    (error,) = [r for r in report.subjects[0].results if r.check == "kl-divergence"]
    assert code == 2 and error.verdict is Verdict.ERROR  # a policy error, with the report written
    assert "max_mean = 1e-09 lies below the measurement's own noise floor" in error.message
    assert "below what the measurement can resolve" in error.message
    assert "options.max_mean" in error.message
    # the floor itself, in nats, is in the message: the same figure a run above it reports
    _, fine = check(qgate, tmp_path, sub, ref, noise=0.05, backend="shape-fake")
    floor = kld_results(fine)["kld_mean"].details["noise_floor"]
    assert f"mean KLD of {floor['mean']:.4g} nats" in error.message
    assert kld_results(fine)["kld_mean"].verdict is Verdict.PASS


def test_a_top1_floor_stricter_than_the_reference_against_itself_is_refused(
    qgate, fake, tmp_path, shape_plugin
):
    code, report = check(
        qgate, tmp_path, fake("sub", noise=0.3), fake("ref"),
        options="{max_mean: null, min_top1_agreement: 1.0}", noise=3.0, backend="shape-fake",
    )  # fmt: skip
    (error,) = [r for r in report.subjects[0].results if r.check == "kl-divergence"]
    assert code == 2 and error.verdict is Verdict.ERROR
    assert "min_top1_agreement = 1 lies above the measurement's own noise floor" in error.message


def test_qgate_baseline_stores_the_floor_with_the_scores(qgate, fake, tmp_path, shape_plugin):
    sub, ref = fake("sub", noise=0.3), fake("ref")
    policy = tmp_path / "floor.yaml"
    policy.write_text(POLICY.format(options="{max_mean: 0.5}", noise=0.05, spot=0))
    baseline = qgate("baseline", ref, "--policy", policy, "--backend", "shape-fake")
    assert baseline.code == 0, baseline
    assert len(floor_files(tmp_path / "qgate-cache")) == 2
    _, report = check(qgate, tmp_path, sub, ref, noise=0.05, backend="shape-fake")
    assert report.counters["model_loads"] == 1
    assert kld_results(report)["kld_mean"].details["noise_floor"]["mean"] > 0


def test_cached_floor_arrays_are_checked_before_use():
    good = {
        "kld": np.zeros((2, 32)),
        "logprob_diff": np.zeros((2, 32)),
        "top1_same": np.ones((2, 32), dtype=bool),
    }
    assert floor_problem(good, chunks=2, n_ctx=128) is None
    assert "entries on axis 1" in str(floor_problem(good, chunks=2, n_ctx=256))
    assert "non-finite" in str(
        floor_problem({**good, "kld": np.full((2, 32), np.nan)}, chunks=2, n_ctx=128)
    )
    assert "negative" in str(
        floor_problem({**good, "logprob_diff": -np.ones((2, 32))}, chunks=2, n_ctx=128)
    )
    assert "arrays" in str(floor_problem({"kld": good["kld"]}, chunks=2, n_ctx=128))
    floor = as_floor("en", good)
    assert floor.tokens == 64 and floor.n_chunks == 2
    pooled = NoiseFloor.pooled([floor, as_floor("code", good)])
    assert pooled.domain == "all" and pooled.n_chunks == 4 and pooled.tokens == 128


# --------------------------------------------------------------------------------------------
# p99.9 and the tokens where the subject departs most


def test_the_tail_is_reported_beside_the_judged_statistics_and_judged_when_limited(
    qgate, fake, tmp_path
):
    _, report = check(qgate, tmp_path, fake("sub", noise=0.3), fake("ref"))
    results = kld_results(report)
    p999 = results["kld_p999"]
    assert p999.threshold is None and p999.verdict is Verdict.PASS
    assert p999.interval is not None and p999.interval.low <= p999.value <= p999.interval.high
    assert results["kld_p99"].value <= p999.value
    _, limited = check(
        qgate, tmp_path, fake("sub", noise=0.3), fake("ref"), options="{max_p999: 1.0e-4}"
    )
    judged = kld_results(limited)["kld_p999"]
    assert judged.threshold == 1.0e-4 and judged.verdict is Verdict.FAIL


def test_the_largest_disagreements_are_shown_with_their_contexts(qgate, fake, tmp_path):
    _, report = check(
        qgate,
        tmp_path,
        fake("sub", noise=0.3),
        fake("ref"),
        options="{max_mean: 0.5, top_tokens: 5}",
    )
    tables = {t.title: t for t in kld_results(report)["kld_mean"].figures.tables}
    table = tables["The 5 tokens where the subject departs most"]
    klds = [row[3] for row in table.rows]
    assert klds == sorted(klds, reverse=True) and len(klds) == 5
    texts = {d: load_dataset(DatasetSpec(name=d)).text for d in ("en", "code")}
    for domain, _, _, _, context, following, *_ in table.rows:
        shown = (context + following).replace("\\n", "\n").replace("\\t", "\t")
        assert shown in texts[domain]  # the fake tokenizes bytes: the context is the corpus
    assert "The 5 tokens where the subject departs most" in (tmp_path / "r.html").read_text()


def test_paired_scores_give_a_token_and_the_tokens_before_it():
    tokens = np.arange(20).reshape(2, 10)
    scores = PairedScores(
        domain="en",
        chunk=np.array([0, 1]),
        ref_logprob=np.zeros(2),
        sub_logprob=np.zeros(2),
        kld=np.zeros(2),
        ref_top1=np.zeros(2, dtype=int),
        sub_top1=np.zeros(2, dtype=int),
        position=np.array([6, 2]),
        tokens=tokens,
    )
    assert scores.context(0, 3) == ([3, 4, 5], 6)
    assert scores.context(1, 5) == ([10, 11], 12)
    bare = PairedScores("all", *(np.zeros(1, dtype=int),) * 6)
    with pytest.raises(ValueError, match="keep no token ids"):
        bare.context(0, 3)


# --------------------------------------------------------------------------------------------
# real llama.cpp passes: a tiny GGUF


@pytest.mark.llama_cpp
def test_a_real_floor_tail_and_departures_on_a_tiny_gguf(qgate, tiny_ladder, tmp_path):
    policy = tmp_path / "floor.yaml"
    policy.write_text(
        "backend: {n_ctx: 128}\n"
        "evaluation: {chunks: 3, top_k: 8, tail_samples: 16, bootstrap: 200}\n"
        "datasets: [en]\n"
        "checks:\n  - use: kl-divergence\n    options: {max_mean: null, top_tokens: 4}\n"
    )
    out = tmp_path / "r.json"
    result = qgate(
        "check", tiny_ladder["Q2_K"], "--reference", tiny_ladder["F16"], "--policy", policy,
        "--json", out, "--html", tmp_path / "r.html", "-q",
    )  # fmt: skip
    assert result.code == 0, result
    results = kld_results(RunReport.from_dict(json.loads(out.read_text())))
    floor = results["kld_mean"].details["noise_floor"]
    # llama.cpp's two passes (another batch shape) land at most a rounding apart: far below
    # what Q2_K does to the same tokens
    assert floor["measured"] and floor["chunks"] == FLOOR_CHUNKS
    assert 0 <= floor["mean"] < results["kld_mean"].value / 10
    assert floor["mean_interval"] is not None
    assert results["kld_p99"].value <= results["kld_p999"].value
    tables = {t.title: t for t in results["kld_mean"].figures.tables}
    departures = tables["The 4 tokens where the subject departs most"]
    assert all(isinstance(row[4], str) and row[4] for row in departures.rows)  # detokenized
    html = (tmp_path / "r.html").read_text()
    assert "Noise floor: the reference against itself" in html and "departs most" in html
