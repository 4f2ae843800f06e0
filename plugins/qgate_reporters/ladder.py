"""The quant ladder: with several subjects, quality against size and speed, and the smallest
quant that passes the gate.

A run-level view computed from the results alone (so ``qgate report`` and ``qgate merge`` draw
it too): mean KLD from ``kl-divergence`` (metric ``kld_mean``, or the figure ``payoff`` read from
the shared scoring pass), the PPL delta from ``perplexity`` (metric ``ppl_delta``), the file size
from the subject's info, and generation speed from ``payoff``'s details when it ran. Nothing
here writes markup: the reporters render the sentence, the table and the chart data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qgate.results import CheckResult, RunReport, SubjectReport, Verdict
from qgate_reporters._common import as_float, one_line

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

    def series(self) -> list[dict[str, Any]]:
        """Chart data (``details["series"]`` shape): each quality figure against size and speed,
        one dot per rung so the legend names it; only charts with at least two dots."""
        charts = []
        quality = (("kld_mean", "mean KLD (nats)"), ("ppl_delta", "PPL delta (%)"))
        axes = (
            ("file_size", "file size (MiB)", MIB),
            ("generation_tok_s", "generation speed (tokens/s)", 1.0),
        )
        for y_key, y_label in quality:
            for x_key, x_label, scale in axes:
                lines = []
                for rung in self.rungs:
                    x, y = getattr(rung, x_key), getattr(rung, y_key)
                    if x is None or y is None:
                        continue
                    y_value = y * 100 if y_key == "ppl_delta" else y
                    lines.append({"name": rung.label, "x": [x / scale], "y": [y_value]})
                if len(lines) >= MIN_RUNGS:
                    charts.append(
                        {
                            "title": f"{y_label.split(' (')[0]} vs {x_label.split(' (')[0]}",
                            "x_label": x_label,
                            "y_label": y_label,
                            "lines": lines,
                        }
                    )
        return charts

    def table(self) -> dict[str, Any]:
        """The rungs as a ``details["tables"]`` entry, largest file first."""

        def num(value: float | None, fmt: str) -> str:
            return format(value, fmt) if value is not None else ""

        return {
            "title": "Quant ladder",
            "columns": [
                "quant",
                "verdict",
                "file size",
                "bits per weight",
                "mean KLD",
                "PPL delta",
                "generation tok/s",
                "generation speedup",
            ],
            "rows": [
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
        }


def _finite(value: Any) -> float | None:
    number = as_float(value)
    return number if number is not None and math.isfinite(number) else None


def _metric(results: list[CheckResult], check: str, metric: str) -> float | None:
    for result in results:
        if result.check == check and result.metric == metric:
            value = _finite(result.value)
            if value is not None:
                return value
    return None


def _payoff_detail(results: list[CheckResult], *keys: str) -> float | None:
    """A number from a ``payoff`` result's details, e.g. ``("subject", "tg_tok_s")``."""
    for result in results:
        if result.check != "payoff" or not isinstance(result.details, dict):
            continue
        value: Any = result.details
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        number = _finite(value)
        if number is not None:
            return number
    return None


def rung(subject: SubjectReport) -> Rung:
    results = subject.results
    info = subject.info if isinstance(subject.info, dict) else {}
    judged = [r for r in results if r.verdict is not Verdict.SKIP]
    passes = bool(judged) and not any(r.verdict.is_blocking for r in results)
    size = _finite(info.get("file_size"))
    kld = _metric(results, "kl-divergence", "kld_mean")
    return Rung(
        label=one_line(subject.label),
        verdict=subject.verdict.value,
        passes=passes,
        file_size=size if size is not None and size > 0 else None,
        bits_per_weight=_finite(info.get("bits_per_weight")),
        kld_mean=kld if kld is not None else _payoff_detail(results, "kld_mean"),
        ppl_delta=_metric(results, "perplexity", "ppl_delta"),
        generation_tok_s=_payoff_detail(results, "subject", "tg_tok_s"),
        generation_speedup=_metric(results, "payoff", "generation_speedup"),
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
