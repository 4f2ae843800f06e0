"""The generation-collapse detectors, on hand-written outputs and on property-based inputs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qgate_checks.degeneration import (
    LABELS,
    analyse,
    longest_periodic_run,
    script_of,
    unclosed_think,
)

CLEAN = (
    "Bees carry pollen from flower to flower, and many crops depend on them to set fruit. "
    "Without pollinators, farmers would need to pollinate orchards by hand, which is slow and costly."
)


def toks(text: str) -> list[int]:
    return list(text.encode())


def test_a_clean_paragraph_is_healthy():
    stats = analyse(
        CLEAN, toks(CLEAN), finish_reason="eos", prompt="Why do bees matter?", kind="instruction"
    )
    assert stats.label == "healthy"
    assert stats.loop_chars < 40 and stats.compression_ratio > 0.5


def test_a_phrase_loop_is_looping_and_located():
    text = "The answer is simple. " + "I think that the lighthouse was old. " * 6
    stats = analyse(text, toks(text), finish_reason="length", prompt="Tell me about the lighthouse")
    assert stats.label == "looping"
    assert stats.loop_period == len("I think that the lighthouse was old. ")
    # the periodic stretch may begin a little early (". " also ends the first sentence)
    assert 0 <= text.index("I think that") - stats.loop_start <= 2
    assert stats.loop_start + stats.loop_period + stats.loop_chars == len(text)
    assert stats.compression_ratio < 0.3


def test_a_token_loop_is_looping():
    text = "ok " + "[/INST]" * 40
    stats = analyse(text, toks(text), finish_reason="length")
    assert stats.label == "looping" and stats.loop_period == len("[/INST]")


def test_an_unclosed_think_is_unclosed():
    text = "<think>First I add the apples. Then I subtract the ones she gave away, which leaves"
    stats = analyse(text, toks(text), finish_reason="eos", kind="reasoning")
    assert stats.label == "unclosed" and stats.unclosed_think
    closed = "<think>add them</think> The answer is 43."
    assert analyse(closed, toks(closed), finish_reason="eos", kind="reasoning").label == "healthy"
    assert unclosed_think("and so the total is", prompt="<think>\nI need to")


def test_a_budget_exhausted_answer_is_truncated_but_a_continuation_is_not():
    ramble = (
        "Well, there are many things to consider here, such as the weather, the soil, the seeds"
    )
    assert (
        analyse(ramble, toks(ramble), finish_reason="length", kind="instruction").label
        == "truncated"
    )
    assert (
        analyse(ramble, toks(ramble), finish_reason="length", kind="continuation").label
        == "healthy"
    )


def test_degenerate_outputs():
    assert analyse("   ", [], finish_reason="eos").label == "degenerate"
    garbage = "\ufffd\x07\x08\ufffd\x0e\x0f" * 10
    assert analyse(garbage, toks(garbage), finish_reason="length").label == "degenerate"
    english = "The winter came early and the river froze over completely this year."
    stats = analyse(
        english, toks(english), finish_reason="eos", prompt="Зима в том году пришла рано"
    )
    assert (
        stats.label == "degenerate"
        and stats.prompt_script == "cyrillic"
        and stats.script == "latin"
    )


def test_scripts():
    assert script_of("Зима пришла рано") == "cyrillic"
    assert script_of("小さな駅の待合室") == "cjk"
    assert script_of("गाँव के बाहर") == "devanagari"
    assert script_of("السوق القديم") == "arabic"
    assert script_of("1 2 3") is None


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=300),
    st.sampled_from(["eos", "length", "stop"]),
    st.sampled_from(["continuation", "instruction"]),
)
def test_any_text_gets_a_label_and_sane_measures(text, finish, kind):
    stats = analyse(text, toks(text), finish_reason=finish, kind=kind)
    assert stats.label in LABELS
    assert 0 <= stats.repeated_ngram_fraction <= 1
    assert 0 <= stats.loop_chars <= len(text)
    assert 0 <= stats.nonprintable_fraction <= 1


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8", categories=["L", "Zs"]), min_size=5, max_size=40),
    st.integers(4, 10),
)
def test_any_phrase_repeated_enough_is_a_loop(phrase, times):
    text = phrase * times
    length, period, start = longest_periodic_run(text)
    assert period <= len(phrase) and length >= len(phrase) * (times - 1)
    assert start >= 0 and start + period + length <= len(text)
    if len(text) >= 60 and len(set(phrase)) > 1:
        assert analyse(text, toks(text), finish_reason="length").label in ("looping", "degenerate")
