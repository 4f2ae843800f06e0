"""What a check shows in the report beside its numbers: tables, charts and samples.

This is the contract between checks and reporters. A check builds these typed objects and
attaches them to a result (``ctx.result(..., tables=[...], charts=[...], samples=[...])``); every
reporter renders them the same way, and none needs to know which check made them. In the JSON
results they are plain lists and mappings, read back with :meth:`from_dict`, which accepts only
what it can render: a results file is untrusted input, so malformed entries are dropped and cells
become text or numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: a table cell: text, a number, or empty
Cell = str | int | float | None


@dataclass
class Table:
    """Rows of cells under column headings, e.g. perplexity by domain."""

    title: str
    columns: list[str]
    #: any values a check has at hand; each becomes a :data:`Cell` (text, a number or empty)
    rows: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = [[_cell(c) for c in row] for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [[_json_cell(c) for c in row] for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Table | None:
        if not isinstance(data, dict):
            return None
        rows = [row if isinstance(row, list) else [row] for row in _list(data.get("rows"))]
        return cls(_text(data.get("title")), [_text(c) for c in _list(data.get("columns"))], rows)


@dataclass
class Line:
    """One named line of a chart. ``x`` values that are text (bucket names) are categories,
    placed evenly in order; a ``None`` or non-finite ``y`` breaks the line."""

    name: str
    x: list[float | str]
    y: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "x": list(self.x), "y": [_jsonas_float(v) for v in self.y]}

    @classmethod
    def from_dict(cls, data: Any) -> Line | None:
        if not isinstance(data, dict):
            return None
        xs = [x if isinstance(x, str) else as_float(x) for x in _list(data.get("x"))]
        return cls(
            _text(data.get("name")),
            [x for x in xs if x is not None],
            [as_float(y) for y in _list(data.get("y"))],
        )


@dataclass
class Chart:
    """Lines over a shared x axis, e.g. mean KLD by position for each KV cache type."""

    title: str
    x_label: str
    y_label: str
    lines: list[Line] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "x_label": self.x_label,
            "y_label": self.y_label,
            "lines": [line.to_dict() for line in self.lines],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Chart | None:
        if not isinstance(data, dict):
            return None
        lines = [line for raw in _list(data.get("lines")) if (line := Line.from_dict(raw))]
        return cls(
            _text(data.get("title")), _text(data.get("x_label")), _text(data.get("y_label")), lines
        )


@dataclass
class Sample:
    """One generation worth reading: the prompt, what the subject and the reference said.

    ``subject_highlight`` marks a character span of the subject's text (where a loop starts).
    Everything here is model output: reporters escape it.
    """

    prompt: str
    subject: str
    reference: str = ""
    note: str = ""
    subject_highlight: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "subject": self.subject,
            "reference": self.reference,
            "note": self.note,
        }
        if self.subject_highlight is not None:
            data["subject_highlight"] = list(self.subject_highlight)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Sample | None:
        if not isinstance(data, dict):
            return None
        span = data.get("subject_highlight")
        highlight = None
        if isinstance(span, list) and len(span) == 2 and all(type(i) is int for i in span):
            highlight = (span[0], span[1])
        return cls(
            prompt=_text(data.get("prompt")),
            subject=_text(data.get("subject")),
            reference=_text(data.get("reference")),
            note=_text(data.get("note")),
            subject_highlight=highlight,
        )


@dataclass
class Figures:
    """Everything a result shows beside its numbers."""

    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tables or self.charts or self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": [t.to_dict() for t in self.tables],
            "charts": [c.to_dict() for c in self.charts],
            "samples": [s.to_dict() for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Figures:
        data = data if isinstance(data, dict) else {}
        return cls(
            tables=[t for raw in _list(data.get("tables")) if (t := Table.from_dict(raw))],
            charts=[c for raw in _list(data.get("charts")) if (c := Chart.from_dict(raw))],
            samples=[s for raw in _list(data.get("samples")) if (s := Sample.from_dict(raw))],
        )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def as_float(value: Any) -> float | None:
    """A number read back from results: ints, floats, numpy scalars, and the ``"nan"``/``"inf"``
    strings JSON results use for non-finite values; None for anything else (booleans too)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cell(value: Any) -> Cell:
    if value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return _cell(value.item())
    return str(value)


def _jsonas_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _json_cell(value: Cell) -> Cell:
    return _jsonas_float(value) if isinstance(value, float) else value


@dataclass(frozen=True)
class Headline:
    """A figure that summarises a subject across checks: the quant ladder plots the ``damage``
    headlines against file size and the ``speed`` headlines. A check attaches the headline
    values it measures to a result (``ctx.result(..., headlines={KLD_MEAN.key: value})``), so
    run-level views read them by key and never need to know which check measured them."""

    key: str
    label: str
    kind: str  #: ``damage`` (lower is better) or ``speed`` (higher is better)


KLD_MEAN = Headline("kld_mean", "mean KLD (nats)", "damage")
PPL_DELTA = Headline("ppl_delta", "PPL delta (%)", "damage")
GENERATION_TOK_S = Headline("generation_tok_s", "generation speed (tokens/s)", "speed")
GENERATION_SPEEDUP = Headline("generation_speedup", "generation speedup", "speed")
#: every headline a run-level view knows, in the order it shows them
HEADLINES: tuple[Headline, ...] = (KLD_MEAN, PPL_DELTA, GENERATION_TOK_S, GENERATION_SPEEDUP)


def headline_values(data: Any) -> dict[str, float]:
    """A result's headline values read back from JSON: known keys with finite numbers only."""
    known = {h.key for h in HEADLINES}
    values: dict[str, float] = {}
    for key, raw in data.items() if isinstance(data, dict) else ():
        number = as_float(raw)
        if key in known and number is not None and math.isfinite(number):
            values[key] = number
    return values
