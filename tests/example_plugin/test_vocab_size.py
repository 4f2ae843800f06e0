"""The example plugin's own tests, as its author would write them: the ``qgate_check`` fixture
(qgate's pytest plugin) runs the check through qgate's runner on fake models."""

from __future__ import annotations

from qgate_example_check import VocabSizeCheck

from qgate.results import Verdict


def test_a_small_vocabulary_fails(qgate_check):
    run = qgate_check.run(
        VocabSizeCheck(),
        options={"min_vocab_size": 32000},
        subject={"metadata": {"vocab_size": 50}},
    )
    result = run.result("vocab_size")
    assert result.verdict is Verdict.FAIL
    assert (result.value, result.threshold) == (50, 32000)


def test_a_large_vocabulary_passes(qgate_check):
    run = qgate_check.run(
        VocabSizeCheck(),
        options={"min_vocab_size": 32000},
        subject={"metadata": {"vocab_size": 151936}},
    )
    assert run.verdicts == {"vocab-size.vocab_size": Verdict.PASS}
    assert "vocab\\_size" in run.render("markdown")
