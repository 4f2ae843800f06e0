"""The ``html`` reporter: one self-contained HTML file (inline CSS and SVG, no JavaScript).

The page is rendered by ``templates/report.html.j2`` with autoescaping on, from view data built
here, so every model-provided string (labels, paths, messages, identity fields, samples) reaches
the page escaped. A Content-Security-Policy ``<meta>`` forbids scripts and remote loads besides.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import jinja2

from qgate.figures import Sample, Table, as_float
from qgate.hookspecs import hookimpl
from qgate.reporter import Reporter
from qgate.results import VERDICT_ORDER, CheckResult, RunReport, SubjectReport, Verdict
from qgate_reporters._common import (
    all_results,
    by_severity,
    counters,
    counts_text,
    folded,
    interval_text,
    machine_summary,
    provenance_digests,
    provenance_versions,
    subject_format,
    threshold_text,
    value_text,
    verdict_counts,
    writes_any_text,
)
from qgate_reporters.charts import ChartView, build_chart
from qgate_reporters.intervals import IntervalChartView, interval_charts
from qgate_reporters.ladder import quant_ladder
from qgate_reporters.matrix import Cell, verdict_matrix

TEMPLATE = "report.html.j2"
#: subject info fields shown in a subject's fact table, in order, with their captions
INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("architecture", "architecture"),
    ("parameter_count", "parameters"),
    ("bits_per_weight", "bits per weight"),
    ("file_type", "file type"),
    ("context_length", "context length"),
    ("vocab_size", "vocabulary size"),
    ("expert_count", "experts"),
    ("file_size", "file size"),
    ("tokenizer_hash", "tokenizer hash"),
    ("chat_template_hash", "chat template hash"),
)


@dataclass
class TableView:
    """A table with every cell as text, every row as wide as the widest."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class SampleView:
    prompt: str
    subject: str
    reference: str
    note: str
    #: the subject's text split around a highlighted span (a detected loop), when there is one
    subject_parts: tuple[str, str, str] | None = None


@dataclass
class ResultView:
    anchor: str
    name: str
    verdict: str
    value: str
    interval: str
    threshold: str
    message: str
    severity: str
    duration: str
    tables: list[TableView] = field(default_factory=list)
    charts: list[ChartView] = field(default_factory=list)
    samples: list[SampleView] = field(default_factory=list)
    traceback: str = ""

    @property
    def has_details(self) -> bool:
        return bool(self.tables or self.charts or self.samples or self.traceback)


@dataclass
class HistogramRow:
    name: str
    count: str
    share: str  #: percent, for the bar width
    percent: str


@dataclass
class SubjectView:
    anchor: str
    label: str
    path: str
    backend: str
    format: str
    verdict: str
    counts: list[tuple[str, int]]
    total: int
    facts: list[tuple[str, str]]
    identity: list[tuple[str, str]]
    tensor_types: list[HistogramRow]
    results: list[ResultView]
    #: per-part results (domains, KV cache types, buckets) as interval bars
    intervals: list[IntervalChartView] = field(default_factory=list)
    #: nothing of it blocks the gate: its details start folded
    folded: bool = False


def cell(value: Any) -> str:
    """A detail-table cell as text: numbers compactly, containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def table_view(table: Table) -> TableView:
    """A table with every cell as text; short rows padded to the widest."""
    columns = [cell(c) for c in table.columns]
    rows = [[cell(c) for c in row] for row in table.rows]
    width = max([len(columns), *(len(r) for r in rows)], default=0)
    columns += [""] * (width - len(columns))
    return TableView(table.title, columns, [r + [""] * (width - len(r)) for r in rows])


def sample_view(sample: Sample) -> SampleView:
    return SampleView(
        prompt=sample.prompt,
        subject=sample.subject,
        reference=sample.reference,
        note=sample.note,
        subject_parts=_split_highlight(sample.subject, sample.subject_highlight),
    )


def _split_highlight(text: str, span: tuple[int, int] | None) -> tuple[str, str, str] | None:
    """``text`` cut into before / highlighted / after, for a ``(start, end)`` character span."""
    if span is None:
        return None
    start, end = max(0, span[0]), min(len(text), span[1])
    if start >= end:
        return None
    return text[:start], text[start:end], text[end:]


def human_count(value: Any) -> str:
    number = as_float(value)
    if number is None or not math.isfinite(number):
        return cell(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= limit:
            return f"{number / limit:.2f}{suffix} ({int(number):,})"
    return f"{int(number):,}"


def human_bytes(value: Any) -> str:
    number = as_float(value)
    if number is None or not math.isfinite(number):
        return cell(value)
    for limit, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(number) >= limit:
            return f"{number / limit:.2f} {suffix}"
    return f"{int(number)} B"


def fact_text(key: str, value: Any) -> str:
    if key == "parameter_count":
        return human_count(value)
    if key == "file_size":
        return human_bytes(value)
    if key == "bits_per_weight":
        number = as_float(value)
        return f"{number:.3f}" if number is not None and math.isfinite(number) else cell(value)
    return cell(value)


def histogram(tensor_types: Any) -> list[HistogramRow]:
    """``info["tensor_types"]`` (type -> count) as rows, most common first."""
    if not isinstance(tensor_types, dict):
        return []
    counts = [(str(k), as_float(v)) for k, v in tensor_types.items()]
    counts_ok = [(k, v) for k, v in counts if v is not None and math.isfinite(v) and v >= 0]
    total = sum(v for _, v in counts_ok)
    rows = []
    for name, count in sorted(counts_ok, key=lambda kv: (-kv[1], kv[0])):
        share = count / total * 100 if total else 0.0
        rows.append(HistogramRow(name, f"{int(count):,}", f"{share:.1f}", f"{share:.1f}%"))
    return rows


def result_view(anchor: str, result: CheckResult) -> ResultView:
    details = result.details if isinstance(result.details, dict) else {}
    traceback = details.get("traceback")
    return ResultView(
        anchor=anchor,
        name=result.name,
        verdict=result.verdict.value,
        value=value_text(result),
        interval=interval_text(result.interval, result.unit, level=True),
        threshold=threshold_text(result),
        message=result.message,
        severity=result.severity.value,
        duration=f"{result.duration_s:.2f} s" if result.duration_s else "",
        tables=[table_view(t) for t in result.figures.tables],
        charts=[build_chart(c) for c in result.figures.charts],
        samples=[sample_view(s) for s in result.figures.samples],
        traceback=cell(traceback) if traceback else "",
    )


def subject_view(index: int, subject: SubjectReport) -> SubjectView:
    info = subject.info
    counts = verdict_counts(subject.results)
    facts = [
        (caption, fact_text(key, info[key]))
        for key, caption in INFO_FIELDS
        if info.get(key) not in (None, "", {}, [])
    ]
    identity = info.get("identity")
    anchor = f"s{index + 1}"
    return SubjectView(
        anchor=anchor,
        label=subject.label,
        path=subject.path,
        backend=subject.backend,
        format=subject_format(subject),
        verdict=subject.verdict.value,
        counts=[(v.value, counts[v]) for v in VERDICT_ORDER],
        total=len(subject.results),
        facts=facts,
        identity=[(str(k), cell(v)) for k, v in identity.items()]
        if isinstance(identity, dict)
        else [],
        tensor_types=histogram(info.get("tensor_types")),
        results=[
            result_view(f"{anchor}-r{i + 1}", r) for i, r in enumerate(by_severity(subject.results))
        ],
        intervals=interval_charts(subject.results),
        folded=folded(subject),
    )


@dataclass
class LadderView:
    """The run-level quant ladder (two subjects or more): sentence, table and charts."""

    sentence: str
    passes: bool
    table: TableView
    charts: list[ChartView]


def ladder_view(report: RunReport) -> LadderView | None:
    ladder = quant_ladder(report)
    if ladder is None:
        return None
    return LadderView(
        sentence=ladder.sentence,
        passes=ladder.smallest is not None and not ladder.incomplete,
        table=table_view(ladder.table()),
        charts=[build_chart(chart) for chart in ladder.series()],
    )


@dataclass
class MatrixView:
    checks: list[str]
    #: per subject, worst first: its anchor, label, verdict, counts and one cell per check
    rows: list[tuple[str, str, str, str, list[Cell | None]]]


def matrix_view(report: RunReport) -> MatrixView | None:
    """The verdict matrix (quant x check) that opens the report, or None without results."""
    matrix = verdict_matrix(report)
    if not matrix.rows or not matrix.checks:
        return None
    anchors = {id(s): f"s{i + 1}" for i, s in enumerate(report.subjects)}
    return MatrixView(
        matrix.checks,
        [
            (
                anchors[id(row.subject)],
                row.label,
                row.verdict,
                counts_text(verdict_counts(row.subject.results)),
                row.cells,
            )
            for row in matrix.rows
        ],
    )


def reference_facts(reference: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The reference model's path, backend and main facts, when there was one."""
    if not reference:
        return []
    raw_info = reference.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    facts = [(k, cell(reference[k])) for k in ("path", "backend") if reference.get(k)]
    for key in ("label", "format"):
        if info.get(key):
            facts.append((key, cell(info[key])))
    facts += [
        (caption, fact_text(key, info[key]))
        for key, caption in INFO_FIELDS
        if info.get(key) not in (None, "", {}, [])
    ]
    return facts


def seconds(value: Any) -> str:
    number = as_float(value)
    return f"{number:.2f} s" if number is not None else cell(value)


def environment(report: RunReport) -> list[tuple[str, str]]:
    return [(str(k), cell(v)) for k, v in report.environment.items()]


_env: jinja2.Environment | None = None


def template_environment() -> jinja2.Environment:
    """The jinja2 environment: the package's templates, autoescaped, strict about names."""
    global _env
    if _env is None:
        _env = jinja2.Environment(
            loader=jinja2.PackageLoader("qgate_reporters", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
    return _env


class HtmlReporter(Reporter):
    """A single self-contained HTML page: summary, per-subject facts, results, charts, samples."""

    name = "html"
    description = "self-contained HTML report (no JavaScript, no external assets)"
    writes_file = True

    @writes_any_text
    def render(self, report: RunReport) -> str:
        results = all_results(report)
        overall = verdict_counts(results)
        template = template_environment().get_template(TEMPLATE)
        return template.render(
            report=report,
            verdict=report.verdict.value,
            verdicts=[v.value for v in VERDICT_ORDER],
            overall_counts=[(v.value, overall[v]) for v in VERDICT_ORDER],
            total=len(results),
            subjects=sorted(
                (subject_view(i, s) for i, s in enumerate(report.subjects)),
                key=lambda view: VERDICT_ORDER.index(Verdict(view.verdict)),
            ),
            matrix=matrix_view(report),
            reference=reference_facts(report.reference),
            ladder=ladder_view(report),
            counters=counters(report),
            timings=[(k, seconds(v)) for k, v in report.timings.items()],
            environment=environment(report),
            provenance_digests=provenance_digests(report),
            provenance_versions=provenance_versions(report),
            machine=machine_summary(report),
            coverage=str(report.coverage),
        )


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [HtmlReporter()]
