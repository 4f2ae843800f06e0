"""The quant ladder: with several subjects, quality against size and speed, and the smallest
quant that passes the gate.

A run-level view computed from the results alone (so ``qgate report`` and ``qgate merge`` draw
it too): the headline figures the checks attach to their results (:data:`qgate.figures.HEADLINES`:
mean KLD, PPL delta, generation speed and speedup, whichever check measured them) and the file
size from the subject's info. Nothing here writes markup: the reporters render the sentence,
the table and the charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qgate.figures import (
    GENERATION_SPEEDUP,
    GENERATION_TOK_S,
    HEADLINES,
    KLD_MEAN,
    PPL_DELTA,
    Chart,
    Headline,
    Line,
    Table,
    as_float,
)
from qgate.results import CheckResult, RunReport, SubjectReport, Verdict
from qgate_reporters._common import one_line

MIB = 2**20
#: fewer subjects than this make no ladder
MIN_RUNGS = 2


@dataclass
class Rung:
    """One subject of the ladder and the figures the ladder compares."""

    label: str
    verdict: str
    #: no fail or error verdict: it passes every fail-severity check (and nothing errored)
    passes: bool
    file_size: float | None = None
    bits_per_weight: float | None = None
    kld_mean: float | None = None
    ppl_delta: float | None = None
    generation_tok_s: float | None = None
    generation_speedup: float | None = None

    @property
    def size_text(self) -> str:
        return f"{self.file_size / MIB:.1f} MiB" if self.file_size is not None else "size unknown"


@dataclass
class Ladder:
    rungs: list[Rung]
    #: the smallest passing rung (by file size), or None when none passes
    smallest: Rung | None
    incomplete: bool = False

    @property
    def sentence(self) -> str:
        if self.incomplete:
            return "Run incomplete: no quant can be named as passing every fail-severity check."
        if self.smallest is None:
            return "No quant passes every fail-severity check."
        return (
            "Smallest quant that passes every fail-severity check: "
            f"{self.smallest.label} ({self.smallest.size_text})"
        )

    def series(self) -> list[Chart]:
        """Each quality figure against size and speed, one dot per rung so the legend names
        it; only charts with at least two dots."""
        charts = []
        quality = [(h.key, h.label) for h in HEADLINES if h.kind == "damage"]
        axes = (
            ("file_size", "file size (MiB)", MIB),
            (GENERATION_TOK_S.key, GENERATION_TOK_S.label, 1.0),
        )
        for y_key, y_label in quality:
            for x_key, x_label, scale in axes:
                lines = []
                for rung in self.rungs:
                    x, y = getattr(rung, x_key), getattr(rung, y_key)
                    if x is None or y is None:
                        continue
                    y_value = y * 100 if y_key == "ppl_delta" else y
                    lines.append(Line(rung.label, [x / scale], [y_value]))
                if len(lines) >= MIN_RUNGS:
                    title = f"{y_label.split(' (')[0]} vs {x_label.split(' (')[0]}"
                    charts.append(Chart(title, x_label, y_label, lines))
        return charts

    def table(self) -> Table:
        """The rungs, largest file first; a figure no rung has (generation speed when
        ``payoff`` did not run) leaves no empty column."""

        def num(value: float | None, fmt: str) -> str:
            return format(value, fmt) if value is not None else ""

        return without_empty_columns(
            "Quant ladder",
            [
                "quant",
                "verdict",
                "file size",
                "bits per weight",
                "mean KLD",
                "PPL delta",
                "generation tok/s",
                "generation speedup",
            ],
            [
                [
                    r.label,
                    r.verdict,
                    r.size_text if r.file_size is not None else "",
                    num(r.bits_per_weight, ".3f"),
                    num(r.kld_mean, ".4g"),
                    f"{r.ppl_delta * 100:+.2f}%" if r.ppl_delta is not None else "",
                    num(r.generation_tok_s, ".3g"),
                    f"x{r.generation_speedup:.3f}" if r.generation_speedup is not None else "",
                ]
                for r in self.rungs
            ],
        )


def without_empty_columns(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    """A table of ``rows`` without the columns in which every row is empty."""
    keep = [i for i in range(len(columns)) if any(row[i] != "" for row in rows)]
    return Table(title, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows])


def _finite(value: Any) -> float | None:
    number = as_float(value)
    return number if number is not None and math.isfinite(number) else None


def _headline(results: list[CheckResult], headline: Headline) -> float | None:
    """The first finite value any result gives for ``headline``."""
    for result in results:
        value = _finite(result.headlines.get(headline.key))
        if value is not None:
            return value
    return None


def rung(subject: SubjectReport) -> Rung:
    results = subject.results
    info = subject.info if isinstance(subject.info, dict) else {}
    judged = [r for r in results if r.verdict is not Verdict.SKIP]
    passes = bool(judged) and not any(r.verdict.is_blocking for r in results)
    size = _finite(info.get("file_size"))
    return Rung(
        label=one_line(subject.label),
        verdict=subject.verdict.value,
        passes=passes,
        file_size=size if size is not None and size > 0 else None,
        bits_per_weight=_finite(info.get("bits_per_weight")),
        kld_mean=_headline(results, KLD_MEAN),
        ppl_delta=_headline(results, PPL_DELTA),
        generation_tok_s=_headline(results, GENERATION_TOK_S),
        generation_speedup=_headline(results, GENERATION_SPEEDUP),
    )


def quant_ladder(report: RunReport) -> Ladder | None:
    """The ladder of ``report``'s subjects, or None with fewer than two subjects.

    The smallest passing rung is the passing subject with the smallest file; a passing subject
    of unknown size is named only when no passing subject's size is known.
    """
    if len(report.subjects) < MIN_RUNGS:
        return None
    rungs = sorted(
        (rung(s) for s in report.subjects),
        key=lambda r: (r.file_size is None, -(r.file_size or 0.0)),
    )
    passing = [r for r in rungs if r.passes]
    sized = [r for r in passing if r.file_size is not None]
    smallest = min(sized, key=lambda r: r.file_size or 0.0) if sized else None
    if smallest is None and passing:
        smallest = passing[-1]
    return Ladder(rungs=rungs, smallest=smallest, incomplete=report.incomplete)
