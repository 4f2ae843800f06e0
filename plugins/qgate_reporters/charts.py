"""Line charts as plain data for an inline SVG: the HTML template draws what this computes.

Nothing here writes markup. Positions are numbers formatted here; every piece of text (titles,
axis labels, series names, tick labels) is passed through as text for the template's autoescape.
A chart survives bad data: NaN, infinities and ``None`` are skipped (they break a line into
segments), a lone point is drawn as a dot, an empty line is listed in the legend as "no data",
and a flat series gets a range around its value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qgate.figures import Chart, as_float

WIDTH = 640
PLOT_HEIGHT = 240
MARGIN_LEFT = 72
MARGIN_RIGHT = 24
MARGIN_TOP = 28
MARGIN_BOTTOM = 44  # tick labels and the x-axis label
LEGEND_ROW = 18
#: space between the y axis (and the right edge) and the first (last) x position
X_INSET = 8
MAX_CATEGORY_TICKS = 12
#: a line with more points than this gets dots only where a point stands alone
MAX_MARKERS = 60
#: an axis of positive values spanning this factor or more is logarithmic
LOG_RATIO = 10.0
#: the share of the data's span left free at each end of a linear axis
AXIS_PADDING = 0.06
#: the width of a character of a point's label, roughly (11.5 px sans-serif), to tell whether
#: it fits right of its point
CHAR_WIDTH = 7
#: colour-blind-safe palette (Okabe-Ito)
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")


@dataclass
class Tick:
    pos: str  #: the position along the axis, in SVG user units
    label: str


@dataclass
class Marker:
    x: str
    y: str


@dataclass
class PointLabel:
    x: str
    y: str
    text: str
    anchor: str  #: ``start`` (text right of the point) or ``end`` (left of it)


@dataclass
class ChartLine:
    name: str
    color: str
    #: ``points`` attributes of polylines: one per run of consecutive finite points
    segments: list[str] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    empty: bool = False
    #: names written beside lone points
    labels: list[PointLabel] = field(default_factory=list)


@dataclass
class LegendItem:
    name: str
    color: str
    x: str  #: where its colour swatch starts
    y: str
    empty: bool

    @property
    def swatch_end(self) -> str:
        return num(float(self.x) + 18)

    @property
    def text_x(self) -> str:
        return num(float(self.x) + 24)


@dataclass
class ChartView:
    """A chart's geometry for the template's inline SVG."""

    title: str
    x_label: str
    y_label: str
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    lines: list[ChartLine] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)
    #: shown instead of the plot when no line has a single finite point
    note: str = ""

    @property
    def plot_width(self) -> int:
        return self.right - self.left

    @property
    def plot_height(self) -> int:
        return self.bottom - self.top

    @property
    def x_label_y(self) -> int:
        return self.bottom + MARGIN_BOTTOM - 8

    @property
    def y_label_x(self) -> int:
        return 14

    @property
    def mid_x(self) -> int:
        return (self.left + self.right) // 2

    @property
    def mid_y(self) -> int:
        return (self.top + self.bottom) // 2


def num(value: float) -> str:
    """A coordinate for an SVG attribute: short, and never NaN."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def tick_labels(values: list[float]) -> list[str]:
    """Short labels for ticks, with as many digits as it takes to tell them apart."""
    step = abs(values[1] - values[0]) if len(values) > 1 else 0.0
    # start + i * step can land a hair off zero (2.7e-17): that tick is zero
    values = [0.0 if abs(v) <= step * 1e-9 else v for v in values]
    labels: list[str] = []
    for digits in range(4, 18):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            break
    return labels


def nice_step(span: float, target: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``target`` ticks."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / max(target, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = multiple * magnitude
        if step >= raw:
            return step
    return 10 * magnitude


def padded_range(low: float, high: float) -> tuple[float, float]:
    """``(low, high)`` widened when it is a single value, so the axis has a length."""
    if high > low:
        return low, high
    pad = abs(low) * 0.1 if low != 0 else 1.0
    return low - pad, high + pad


def nice_ticks(low: float, high: float, target: int = 5) -> tuple[float, float, list[float]]:
    """An axis range widened to round numbers, and the ticks on it."""
    low, high = padded_range(low, high)
    step = nice_step(high - low, target)
    start = math.floor(low / step) * step
    stop = math.ceil(high / step) * step
    count = round((stop - start) / step)
    if not 1 <= count <= 50:  # float trouble at extreme magnitudes: just the two ends
        return low, high, [low, high]
    ticks = [start + i * step for i in range(count + 1)]
    return start, stop, ticks


def _is_category(value: Any) -> bool:
    return value is not None and as_float(value) is None


#: one line's points in plot units: None where a value is missing or not finite (a gap)
Points = list[tuple[float, float] | None]


def build_chart(chart_data: Chart) -> ChartView:
    """The geometry of one chart. x values that are text (bucket names, say) are placed evenly
    in order of appearance; a numeric axis whose values are all positive and span a factor of
    :data:`LOG_RATIO` or more is logarithmic (KLD from Q8_0 to Q2_K, positions 256 to 4K)."""
    names = [line.name for line in chart_data.lines]
    finite, categories = _points(chart_data)
    bottom = MARGIN_TOP + PLOT_HEIGHT
    chart = ChartView(
        title=chart_data.title,
        x_label=chart_data.x_label,
        y_label=chart_data.y_label,
        width=WIDTH,
        height=bottom + MARGIN_BOTTOM + LEGEND_ROW * len(names) + 8,
        left=MARGIN_LEFT,
        top=MARGIN_TOP,
        right=WIDTH - MARGIN_RIGHT,
        bottom=bottom,
    )
    for i, name in enumerate(names):
        y = bottom + MARGIN_BOTTOM + LEGEND_ROW * i + 10
        empty = not any(p is not None for p in finite[i])
        chart.legend.append(LegendItem(name, _color(i), num(chart.left), num(y), empty))
    all_points = [p for row in finite for p in row if p is not None]
    if not all_points:
        chart.note = "no data"
        chart.lines = [ChartLine(name, _color(i), empty=True) for i, name in enumerate(names)]
        return chart
    x_axis = (
        Axis.categories(len(categories))
        if categories is not None
        else Axis.numeric([p[0] for p in all_points])
    )
    y_axis = Axis.numeric([p[1] for p in all_points])
    if y_axis.log and chart.y_label:
        chart.y_label += " (log scale)"
    if x_axis.log and chart.x_label:
        chart.x_label += " (log scale)"

    def sx(x: float) -> float:
        inner = chart.plot_width - 2 * X_INSET
        return chart.left + X_INSET + x_axis.fraction(x) * inner

    def sy(y: float) -> float:
        return chart.bottom - y_axis.fraction(y) * chart.plot_height

    y_labels = tick_labels(y_axis.ticks) if not y_axis.log else [log_label(t) for t in y_axis.ticks]
    chart.y_ticks = [Tick(num(sy(t)), lab) for t, lab in zip(y_axis.ticks, y_labels, strict=True)]
    chart.x_ticks = _x_ticks(categories, x_axis, sx)
    chart.lines = [
        _line(name, _color(i), finite[i], chart.legend[i].empty, sx, sy)
        for i, name in enumerate(names)
    ]
    _label_lone_points(chart)
    return chart


@dataclass
class Axis:
    """Where values sit along one axis: ``fraction`` maps a value to 0..1 of its length."""

    low: float
    high: float
    ticks: list[float]
    log: bool = False

    @classmethod
    def numeric(cls, values: list[float]) -> Axis:
        low, high = min(values), max(values)
        if low > 0 and high / low >= LOG_RATIO:
            return cls.logarithmic(low, high)
        span = high - low if high > low else (abs(low) * 0.1 if low != 0 else 1.0)
        pad = span * AXIS_PADDING  # no point on the frame
        padded_low = low - pad if low - pad >= 0 or low < 0 else 0.0  # no negative axis for >= 0
        start, stop, ticks = nice_ticks(padded_low, high + pad)
        return cls(start, stop, ticks)

    @classmethod
    def logarithmic(cls, low: float, high: float) -> Axis:
        """Whole decades around the values; with three decades or fewer, 2 and 5 times them
        too."""
        first = math.floor(math.log10(low) - AXIS_PADDING)
        last = math.ceil(math.log10(high) + AXIS_PADDING)
        decades = [10.0**e for e in range(first, last + 1)]
        ticks = decades
        if last - first <= 3:
            ticks = sorted(d * m for d in decades for m in (1, 2, 5) if d * m <= decades[-1])
        return cls(decades[0], decades[-1], ticks, log=True)

    @classmethod
    def categories(cls, count: int) -> Axis:
        return cls(0.0, float(max(count - 1, 1)), [float(i) for i in range(count)])

    def fraction(self, value: float) -> float:
        if self.log:
            low, high = math.log10(self.low), math.log10(self.high)
            return (math.log10(value) - low) / (high - low)
        return (value - self.low) / (self.high - self.low)


def log_label(value: float) -> str:
    """A tick of a logarithmic axis: ``0.001``, ``0.02``, ``100``, ``1e+06``."""
    return f"{value:.6g}" if 1e-4 <= value < 1e6 else f"{value:.0e}"


def _label_lone_points(chart: ChartView) -> None:
    """A line of one point (a quant on the ladder) is named beside its dot, so the chart reads
    without the legend; near the right edge the name goes to the dot's left."""
    for line in chart.lines:
        if len(line.markers) != 1 or line.segments:
            continue
        marker = line.markers[0]
        x, y = float(marker.x), float(marker.y)
        near_right = x + 6 + CHAR_WIDTH * len(line.name) > chart.right
        line.labels.append(
            PointLabel(
                num(x - 6 if near_right else x + 6),
                num(max(chart.top + 10, y - 6)),
                line.name,
                "end" if near_right else "start",
            )
        )


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _points(chart_data: Chart) -> tuple[list[Points], dict[str, int] | None]:
    """Each line's (x, y) pairs as numbers, and the categories when x values are text."""
    parsed: list[list[tuple[Any, float | None]]] = []
    for line in chart_data.lines:
        xs: list[Any] = list(line.x)
        if not xs and line.y:
            xs = list(range(len(line.y)))
        # x and y of different lengths: the extra values have no partner and are dropped
        parsed.append([(x, as_float(y)) for x, y in zip(xs, line.y, strict=False)])
    categories: dict[str, int] | None = None
    if any(_is_category(x) for points in parsed for x, _ in points):
        categories = {}
        for points in parsed:
            for x, _ in points:
                if x is not None:
                    categories.setdefault(str(x), len(categories))

    def x_of(x: Any) -> float | None:
        if x is None:
            return None
        return float(categories[str(x)]) if categories is not None else as_float(x)

    finite: list[Points] = []
    for points in parsed:
        row: Points = []
        for x, y in points:
            fx = x_of(x)
            ok = fx is not None and y is not None and math.isfinite(fx) and math.isfinite(y)
            row.append((fx, y) if ok and fx is not None and y is not None else None)
        finite.append(row)
    return finite, categories


def _x_ticks(
    categories: dict[str, int] | None, axis: Axis, sx: Callable[[float], float]
) -> list[Tick]:
    if categories is not None:
        every = max(1, math.ceil(len(categories) / MAX_CATEGORY_TICKS))
        return [Tick(num(sx(float(i))), name) for name, i in categories.items() if i % every == 0]
    labels = [log_label(t) for t in axis.ticks] if axis.log else tick_labels(axis.ticks)
    return [Tick(num(sx(t)), lab) for t, lab in zip(axis.ticks, labels, strict=True)]


def _line(
    name: str,
    color: str,
    points: Points,
    empty: bool,
    sx: Callable[[float], float],
    sy: Callable[[float], float],
) -> ChartLine:
    """Polylines through each run of consecutive points; dots where a point stands alone (or
    everywhere, when the line has few enough points)."""
    line = ChartLine(name, color, empty=empty)
    dots_everywhere = sum(p is not None for p in points) <= MAX_MARKERS
    run: list[Marker] = []
    for point in [*points, None]:
        if point is not None:
            run.append(Marker(num(sx(point[0])), num(sy(point[1]))))
            continue
        if len(run) > 1:
            line.segments.append(" ".join(f"{m.x},{m.y}" for m in run))
        if dots_everywhere or len(run) == 1:
            line.markers.extend(run)
        run = []
    return line
