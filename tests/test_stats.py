from __future__ import annotations

import math

import numpy as np
import pytest

from qgate.results import Comparison, Interval, Severity, Verdict
from qgate.scoring.kld import kld_estimate
from qgate.scoring.logits import log_softmax, summarize_logits
from qgate.stats import bootstrap_interval, decide


@pytest.mark.parametrize(
    ("value", "interval", "on_inconclusive", "expected"),
    [
        (0.005, Interval(0.003, 0.008), "fail", Verdict.PASS),
        (0.02, Interval(0.015, 0.025), "pass", Verdict.FAIL),
        (0.009, Interval(0.006, 0.012), "warn", Verdict.WARN),
        (0.009, Interval(0.006, 0.012), "fail", Verdict.FAIL),
        (0.009, Interval(0.006, 0.012), "pass", Verdict.PASS),
        (0.005, None, "fail", Verdict.PASS),
        (0.02, None, "pass", Verdict.FAIL),
    ],
)
def test_decide_le(value, interval, on_inconclusive, expected):
    verdict, _ = decide(
        value, 0.01, Comparison.LE, interval=interval, on_inconclusive=on_inconclusive
    )
    assert verdict is expected


def test_decide_ge_and_severity_and_non_finite():
    assert decide(0.95, 0.9, Comparison.GE, interval=Interval(0.92, 0.97))[0] is Verdict.PASS
    assert decide(0.5, 0.9, Comparison.GE, severity=Severity.WARN)[0] is Verdict.WARN
    assert decide(math.nan, 0.9, Comparison.GE)[0] is Verdict.ERROR
    assert decide(None, 0.9, Comparison.GE)[0] is Verdict.ERROR
    assert decide(3.0, None, Comparison.LE)[0] is Verdict.PASS


def test_bootstrap_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(3).normal(1.0, 0.2, size=40)
    a = bootstrap_interval(40, lambda idx: float(values[idx].mean()), seed=7)
    b = bootstrap_interval(40, lambda idx: float(values[idx].mean()), seed=7)
    assert a == b and a is not None
    assert a.low < values.mean() < a.high
    assert a.high - a.low < 0.2
    assert bootstrap_interval(1, lambda idx: 0.0) is None


def test_topk_kld_is_a_lower_bound_that_tightens_with_k_and_is_exact_at_full_vocab():
    rng = np.random.default_rng(0)
    ref_logits = rng.normal(size=(50, 1000)) * 3
    sub_logits = ref_logits + rng.normal(size=(50, 1000)) * 0.3
    log_p, log_q = log_softmax(ref_logits), log_softmax(sub_logits)
    full = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
    errors = []
    for k in (4, 64, 1000):
        ref = summarize_logits(ref_logits, np.zeros(50, dtype=int), start=1, top_k=k)
        sub = summarize_logits(
            sub_logits, np.zeros(50, dtype=int), start=1, top_k=k, gather=ref.top_ids
        )
        approx = kld_estimate(ref.top_logprobs, sub.gathered_logprobs)
        assert np.all(approx <= full + 1e-5)  # coarse-graining never increases the divergence
        errors.append(float(abs(approx.mean() - full.mean()) / full.mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4
    same = summarize_logits(ref_logits, np.zeros(50, dtype=int), start=1, top_k=8)
    assert kld_estimate(same.top_logprobs, same.top_logprobs).max() < 1e-6


def test_summarize_logits_rejects_non_finite_logits():
    from qgate.errors import CheckError

    logits = np.zeros((3, 10), dtype=np.float32)
    logits[1, 4] = np.nan
    with pytest.raises(CheckError, match="non-finite"):
        summarize_logits(logits, np.zeros(3, dtype=int), start=5, top_k=2)


def test_summarize_logits_top_k_is_sorted_and_targets_match():
    logits = np.array([[0.0, 3.0, 1.0, 2.0]], dtype=np.float32)
    s = summarize_logits(logits, np.array([3]), start=1, top_k=3)
    assert s.top_ids.tolist() == [[1, 3, 2]]
    assert s.target_logprob[0] == pytest.approx(float(log_softmax(logits)[0, 3]))


def test_tail_samples_make_the_kld_estimate_unbiased_when_the_tail_matters():
    """Much of the mass outside the top-k (as in Gemma 3: 15 % beyond the top 32): the one-bucket
    bound is far too low, the sampled tail estimate lands on the exact mean."""
    rng = np.random.default_rng(1)
    vocab = 5000
    ref_logits = rng.normal(size=(400, vocab)) * 2.5
    sub_logits = ref_logits + rng.normal(size=(400, vocab)) * 1.0
    log_p, log_q = log_softmax(ref_logits), log_softmax(sub_logits)
    exact = float((np.exp(log_p.astype(np.float64)) * (log_p - log_q)).sum(axis=1).mean())
    ref = summarize_logits(
        ref_logits,
        np.zeros(400, dtype=int),
        start=1,
        top_k=16,
        tail_samples=32,
        rng=np.random.default_rng(7),
    )
    assert ref.tail_ids is not None and ref.tail_ids.shape == (400, 32)
    assert not np.isin(ref.tail_ids, ref.top_ids).all(axis=1).any()  # samples come from the tail
    ids = np.concatenate([ref.top_ids, ref.tail_ids], axis=1)
    sub = summarize_logits(sub_logits, np.zeros(400, dtype=int), start=1, top_k=16, gather=ids)
    at = sub.gathered_logprobs
    bound = float(kld_estimate(ref.top_logprobs, at[:, :16]).mean())
    sampled = float(
        kld_estimate(ref.top_logprobs, at[:, :16], ref.tail_logprobs, at[:, 16:]).mean()
    )
    assert bound < 0.8 * exact
    assert abs(sampled - exact) / exact < 0.03
    again = summarize_logits(
        ref_logits,
        np.zeros(400, dtype=int),
        start=1,
        top_k=16,
        tail_samples=32,
        rng=np.random.default_rng(7),
    )
    assert np.array_equal(again.tail_ids, ref.tail_ids)  # seeded: repeatable


@pytest.mark.parametrize("vocab", [300, 1000, 32000, 262144 + 77])
def test_block_wise_top_k_is_the_exact_top_k(vocab):
    from qgate.scoring.logits import top_k_ids

    logits = (np.random.default_rng(vocab).standard_normal((6, vocab)) * 4).astype(np.float32)
    logits[0, -1] = 100.0  # the largest in the remainder columns after the last whole block
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :64]
    np.testing.assert_array_equal(top_k_ids(logits, 64), expected)


@pytest.mark.parametrize("vocab", [300, 32000, 262144 + 77])
def test_block_wise_tail_samples_follow_the_whole_vocabulary_cdf(vocab):
    """The block-wise sampler picks what one cumulative sum over the whole row would pick."""
    from qgate.scoring.logits import sample_tail, top_k_ids

    rng = np.random.default_rng(vocab)
    logits = (rng.standard_normal((5, vocab)) * 3).astype(np.float32)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    top = top_k_ids(logits, 16)
    tail = weights.copy()
    np.put_along_axis(tail, top.astype(np.int64), 0.0, axis=1)
    cdf = np.cumsum(tail, axis=1, dtype=np.float64)
    offsets = np.random.default_rng(9).random((5, 1))
    points = (np.arange(32)[None, :] + offsets) / 32 * cdf[:, -1:]
    expected = np.stack([np.searchsorted(cdf[r], points[r], side="right") for r in range(5)])
    got = sample_tail(weights, top, 32, np.random.default_rng(9))
    np.testing.assert_array_equal(got, expected)
    assert not any(np.isin(got[r], top[r]).any() for r in range(5))  # never a top-k id
