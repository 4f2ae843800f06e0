"""The terminal: width, colour (NO_COLOR, FORCE_COLOR), verbosity; and the progress line with
the run's overall position, elapsed time and ETA."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from qgate.progress import Progress
from qgate.terminal import MIN_WIDTH, Terminal, terminal_width, wants_colour


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("tty", "env", "colour"),
    [
        (True, {}, True),
        (False, {}, False),  # a CI log, a pipe
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, True),  # set but empty: no effect (no-color.org)
        (False, {"FORCE_COLOR": "1"}, True),
        (False, {"FORCE_COLOR": "0"}, False),
        (True, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),  # NO_COLOR wins
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_colour_follows_the_stream_and_the_environment(
    tty: bool, env: dict[str, str], colour: bool
) -> None:
    assert wants_colour(tty, env) is colour
    stream = Tty() if tty else io.StringIO()
    assert Terminal.detect(stream, environ=env).colour is colour


def test_width_from_columns_the_terminal_or_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert terminal_width(False, {"COLUMNS": "200"}) == 200
    assert terminal_width(False, {}) == 120  # a CI log
    assert terminal_width(False, {"COLUMNS": "20"}) == MIN_WIDTH
    monkeypatch.setattr(
        "shutil.get_terminal_size", lambda fallback: __import__("os").terminal_size((93, 40))
    )
    assert terminal_width(True, {}) == 93
    assert Terminal.detect(Tty(), environ={}, verbosity=1) == Terminal(93, True, 1)


def test_style_colours_a_verdict_only_when_colour_is_on() -> None:
    assert Terminal(colour=True).style("FAIL", "fail") == "\x1b[31mFAIL\x1b[0m"
    assert Terminal(colour=False).style("FAIL", "fail") == "FAIL"
    assert Terminal(colour=True).style("x", "unknown") == "x"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress(stream: io.StringIO, **kwargs: Any) -> tuple[Progress, Clock]:
    clock = Clock()
    return Progress(stream, interval=5.0, clock=clock, width=120, **kwargs), clock


def test_the_meter_gives_position_elapsed_and_eta() -> None:
    bar, clock = progress(io.StringIO())
    assert bar.meter() == ""  # no plan yet
    bar.plan(10)
    bar.begin("q8 · perplexity")
    clock.now += 30
    assert bar.meter() == "0/10 checks, 00:30 elapsed, ETA ?"  # nothing finished: no estimate
    bar.begin("q8 · kl-divergence")
    bar.begin("q8 · repetition")
    clock.now += 30  # two finished in 60 s: 8 left at 30 s each
    assert bar.meter() == "2/10 checks, 01:00 elapsed, ETA 04:00"
    bar.drop(4)  # a `when:` that did not match
    assert bar.meter() == "2/6 checks, 01:00 elapsed, ETA 02:00"
    bar.drop(100)  # never below what has begun
    assert bar.meter().startswith("2/3 checks")


def test_a_ci_log_gets_throttled_lines_with_the_position() -> None:
    stream = io.StringIO()
    bar, clock = progress(stream)
    bar.plan(4)
    bar.begin("gemma-q2_k.gguf · perplexity")
    bar.update("scoring [en]", 1, 8, "chunks")
    clock.now += 1
    bar.update("scoring [en]", 2, 8, "chunks")  # within 5 s of the last: not printed
    clock.now += 5
    bar.update("scoring [en]", 3, 8, "chunks")
    bar.update("scoring [en]", 8, 8, "chunks")  # the last always is
    lines = stream.getvalue().splitlines()
    assert lines == [
        "qgate: [0/4 checks, 00:00 elapsed, ETA ?] gemma-q2_k.gguf · perplexity: scoring [en] 1/8 chunks",
        "qgate: [0/4 checks, 00:06 elapsed, ETA ?] gemma-q2_k.gguf · perplexity: scoring [en] 3/8 chunks",
        "qgate: [0/4 checks, 00:06 elapsed, ETA ?] gemma-q2_k.gguf · perplexity: scoring [en] 8/8 chunks",
    ]


def test_a_terminal_gets_one_line_redrawn_in_place_and_fitted() -> None:
    stream = Tty()
    bar, _ = progress(stream)
    bar._width = 60
    bar.plan(2)
    bar.begin("a-very-long-model-name-that-goes-on-and-on.gguf · long-context")
    bar.update("scoring", 1, 4)
    bar.log("loaded it")
    text = stream.getvalue()
    first = text.split("\r\x1b[K")[1]
    assert len(first) == 59 and first.endswith("…")  # one line, never wrapped
    assert text.endswith("\r\x1b[Kqgate: loaded it\n")  # the status line cleared before a log line


def test_nothing_is_printed_when_disabled() -> None:
    stream = io.StringIO()
    bar, _ = progress(stream, enabled=False)
    bar.plan(3)
    bar.begin("x")
    bar.update("t", 1, 2)
    bar.log("m")
    assert stream.getvalue() == ""


def test_a_run_plans_its_checks_and_drops_those_whose_when_does_not_match(
    tmp_path: Path,
) -> None:
    """Two fake models under a policy whose second check applies to MoE models only: the run
    plans 4 units, drops the 2 whose `when:` does not match, and begins the other 2."""
    from qgate.instruments import Instruments
    from qgate.plugins import Registry
    from qgate.policy import load_policy
    from qgate.runner import Runner
    from qgate.testing import write_fake_model

    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "checks:\n"
        "  - use: quant-floor\n"
        "    options: {min_bits_per_weight: 4}\n"
        "  - use: quant-floor\n"
        "    id: moe\n"
        "    when: {expert_count: '> 0'}\n"
    )
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    bar, _ = progress(io.StringIO())
    runner = Runner(registry, policy, instruments=Instruments(progress=bar))
    models = [str(write_fake_model(tmp_path / f"m{i}.fake.json")) for i in range(2)]
    report = runner.run(models)
    assert [r.check_id for s in report.subjects for r in s.results] == ["quant-floor"] * 2
    assert bar.meter().startswith("1/2 checks")  # the second of two is the last begun
