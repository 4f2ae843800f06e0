"""Interval bars: the results of one check that measure one metric over several parts (a domain,
a KV cache type, a position bucket: ``ppl_delta[ja]``, ``max_bucket_kld[q8_0]``), drawn as one
row each: the value as a dot, its interval as a bar, the threshold as a line. Damage is uneven
across languages; this says it in a picture.

Results are grouped by their metric name alone, whatever check made them, so a new check's
per-part results are drawn the same way. Nothing here writes markup: the HTML template draws
what this computes, and every text is passed through for its autoescape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from qgate.results import CheckResult
from qgate_reporters.charts import Tick, nice_ticks, num, tick_labels

#: ``base[part]``: a metric measured on one part of the data
_PART = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<part>[^\[\]]+)\]$")
WIDTH = 640
LABEL_WIDTH = 130
MARGIN_RIGHT = 24
ROW_HEIGHT = 22
MARGIN_TOP = 28
MARGIN_BOTTOM = 36
#: the verdict colours of the report's badges, darker for a dot on white
VERDICT_COLOURS = {
    "pass": "#1a7f37",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "error": "#82071e",
    "skip": "#57606a",
}


@dataclass
class Bar:
    label: str
    verdict: str
    colour: str
    y: str  #: the row's centre
    dot: str  #: the value's position
    low: str = ""  #: the interval's ends, empty without an interval
    high: str = ""
    value: str = ""  #: the value as text, for the row's tooltip
    limit: str = ""  #: the position of the row's threshold, empty without one


@dataclass
class IntervalChartView:
    title: str
    x_label: str
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    bars: list[Bar] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    threshold: str = ""  #: the x of the threshold line, when the rows share one
    threshold_label: str = ""  #: ``limit <= 3``, when the rows share one threshold

    @property
    def label_x(self) -> int:
        return self.left - 8

    @property
    def x_label_y(self) -> int:
        return self.bottom + MARGIN_BOTTOM - 6

    @property
    def mid_x(self) -> int:
        return (self.left + self.right) // 2


def part_groups(results: list[CheckResult]) -> list[tuple[str, list[tuple[str, CheckResult]]]]:
    """``(metric, [(part, result), ...])`` for every metric measured on two parts or more, with
    the overall result (the bare metric of the same check), when there is one, first as ``all``."""
    overall: dict[tuple[str, str], CheckResult] = {}
    parts: dict[tuple[str, str], list[tuple[str, CheckResult]]] = {}
    for result in results:
        if result.value is None or not math.isfinite(result.value):
            continue
        match = _PART.match(result.metric)
        if match is None:
            overall.setdefault((result.check_id, result.metric), result)
            continue
        key = (result.check_id, match["base"])
        parts.setdefault(key, []).append((match["part"], result))
    groups = []
    for key, members in parts.items():
        if len(members) < 2:
            continue
        whole = overall.get(key)
        groups.append((key[1], ([("all", whole)] if whole is not None else []) + members))
    return groups


def interval_chart(metric: str, members: list[tuple[str, CheckResult]]) -> IntervalChartView:
    """The rows of one metric's parts on a shared axis."""
    scale = 100.0 if all(r.unit == "%" for _, r in members) else 1.0
    unit = " (%)" if scale == 100.0 else ""
    points = []
    for part, result in members:
        low, high = _ends(result, scale)
        points.append((part, result, (result.value or 0.0) * scale, low, high))
    thresholds = {r.threshold for _, r in members if r.threshold is not None}
    shared = thresholds.pop() * scale if len(thresholds) == 1 else None
    limits = [r.threshold * scale if r.threshold is not None else None for _, r in members]
    ends = [end for _, _, value, low, high in points for end in (value, low, high)] + limits
    values = [end for end in ends if end is not None]
    start, stop, ticks = nice_ticks(min(values), max(values))
    bottom = MARGIN_TOP + ROW_HEIGHT * len(points)
    view = IntervalChartView(
        title=f"{metric} by part",
        x_label=f"{metric}{unit}",
        width=WIDTH,
        height=bottom + MARGIN_BOTTOM,
        left=LABEL_WIDTH,
        right=WIDTH - MARGIN_RIGHT,
        top=MARGIN_TOP,
        bottom=bottom,
    )

    def sx(value: float) -> str:
        return num(view.left + (value - start) / (stop - start) * (view.right - view.left))

    view.ticks = [Tick(sx(t), label) for t, label in zip(ticks, tick_labels(ticks), strict=True)]
    for i, (part, result, value, low, high) in enumerate(points):
        verdict, limit = result.verdict.value, limits[i]
        view.bars.append(
            Bar(
                label=part,
                verdict=verdict,
                colour=VERDICT_COLOURS.get(verdict, "#57606a"),
                y=num(MARGIN_TOP + ROW_HEIGHT * i + ROW_HEIGHT / 2),
                dot=sx(value),
                low=sx(low) if low is not None else "",
                high=sx(high) if high is not None else "",
                value=f"{value:.4g}{unit.strip(' ()')}",
                limit=sx(limit) if limit is not None else "",
            )
        )
    if shared is not None:
        view.threshold = sx(shared)
        comparison = next(r.comparison for _, r in members)
        sign = f"{comparison.value} " if comparison is not None else ""
        view.threshold_label = f"limit {sign}{shared:.4g}"
    return view


def _ends(result: CheckResult, scale: float) -> tuple[float | None, float | None]:
    interval = result.interval
    if interval is None:
        return None, None
    low, high = interval.low * scale, interval.high * scale
    if not (math.isfinite(low) and math.isfinite(high)):
        return None, None
    return low, high


def interval_charts(results: list[CheckResult]) -> list[IntervalChartView]:
    return [interval_chart(metric, members) for metric, members in part_groups(results)]
