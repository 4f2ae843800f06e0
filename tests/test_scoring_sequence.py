"""The scoring skeleton every backend shares: how logits are batched changes no figure."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qgate.backend import TokenScores
from qgate.errors import CheckError, InternalError
from qgate.scoring.sequence import LogitsBatch, score_sequence

VOCAB, N = 700, 120
RNG = np.random.default_rng(3)
TABLE = (RNG.standard_normal((N, VOCAB)) * 3).astype(np.float32)  # logits at each position
TOKENS = RNG.integers(0, VOCAB, size=N).tolist()


def source(group: int, block: int):  # type: ignore[no-untyped-def]
    """Logits of the scored rows, ``group`` rows per forward pass cut into ``block``-row
    batches; each pass's logits live in one buffer that the next pass overwrites."""

    def produce(scored: np.ndarray) -> Iterator[list[LogitsBatch]]:
        buffer = np.empty((group, VOCAB), dtype=np.float32)
        for begin in range(0, len(scored), group):
            at = scored[begin : begin + group]
            buffer[: len(at)] = TABLE[at - 1]
            yield [
                (at[row : row + block], buffer[row : min(row + block, len(at))])
                for row in range(0, len(at), block)
            ]

    return produce


def score(**kwargs: object) -> TokenScores:
    request: dict[str, object] = {
        "n_ctx": 128,
        "start": 40,
        "top_k": 4,
        "gather": None,
        "tail_samples": 8,
        "positions": None,
        "logits": source(N, N),
    }
    request.update(kwargs)
    return score_sequence(TOKENS, **request)  # type: ignore[arg-type]


def assert_same(a: TokenScores, b: TokenScores) -> None:
    assert a.start == b.start
    for field in ("target_logprob", "top_ids", "top_logprobs", "tail_ids", "tail_logprobs"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    if a.gathered_logprobs is None:
        assert b.gathered_logprobs is None
    else:
        np.testing.assert_array_equal(a.gathered_logprobs, b.gathered_logprobs)


@pytest.mark.parametrize(("group", "block"), [(32, 32), (32, 7), (5, 2)])
def test_batching_changes_no_figure(group: int, block: int) -> None:
    whole = score()
    assert len(whole) == N - 40 and whole.positions is None
    assert_same(whole, score(logits=source(group, block)))  # tail samples too: one stream


def test_parallel_reduction_of_a_subject_pass_changes_no_figure() -> None:
    positions = [3, 9, 10, 11, 50, 51, 90, 119]
    gather = np.arange(len(positions) * 5).reshape(len(positions), 5)
    plain = score(positions=positions, gather=gather, tail_samples=0, top_k=1)
    with ThreadPoolExecutor(3) as pool:
        threaded = score(
            positions=positions,
            gather=gather,
            tail_samples=0,
            top_k=1,
            logits=source(4, 1),
            map_batches=pool.map,
        )
    assert_same(plain, threaded)
    np.testing.assert_array_equal(threaded.positions, positions)
    assert threaded.gathered_logprobs is not None and threaded.gathered_logprobs.shape == (8, 5)


def test_positions_are_validated_before_any_logits_are_asked_for() -> None:
    def never(scored: np.ndarray) -> Iterator[list[LogitsBatch]]:
        raise AssertionError("asked for logits")

    with pytest.raises(CheckError, match="ascending"):
        score(positions=[5, 5], logits=never)
    with pytest.raises(CheckError, match="do not fit the context"):
        score(n_ctx=64, logits=never)


def test_a_backend_that_skips_rows_is_an_internal_error() -> None:
    def half(scored: np.ndarray) -> Iterator[list[LogitsBatch]]:
        yield [(scored[:10], TABLE[scored[:10] - 1])]

    with pytest.raises(InternalError, match="10 of 80 scored positions"):
        score(logits=half)
