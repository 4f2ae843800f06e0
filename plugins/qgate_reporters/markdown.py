"""The ``markdown`` reporter: a GitHub-flavoured summary for ``$GITHUB_STEP_SUMMARY`` or a PR
comment.

Every model-provided string goes through :func:`md_escape`: GitHub renders inline HTML and
Markdown links in both places, so a model label must not be able to add either.
"""

from __future__ import annotations

import html
import re
from typing import Any

from qgate.hookspecs import hookimpl
from qgate.reporter import Reporter
from qgate.results import CheckResult, RunReport, SubjectReport
from qgate_reporters._common import (
    all_results,
    by_severity,
    counters,
    counts_text,
    folded,
    interval_text,
    machine_summary,
    one_line,
    provenance_digests,
    provenance_versions,
    subject_format,
    subjects_worst_first,
    threshold_text,
    truncate,
    value_text,
    verdict_counts,
    writes_any_text,
)
from qgate_reporters.ladder import quant_ladder
from qgate_reporters.matrix import verdict_matrix

#: longest message kept in a table cell (a PR comment holds at most 65,536 characters)
MESSAGE_LIMIT = 300
#: Markdown characters that could start a link, an image, emphasis or code, or end a table cell
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")
#: a (short) hex digest, safe inside a code span as it is
_HEX = re.compile(r"[0-9a-f]+")


def md_escape(text: Any) -> str:
    """``text`` safe inside a GitHub Markdown table cell or heading.

    Newlines become spaces, Markdown punctuation (``|``, ``[``, ``*``, backticks, ...) is
    backslash-escaped, and ``<``, ``>``, ``&`` become HTML entities.
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", one_line(text))
    return html.escape(escaped, quote=False)


def result_row(result: CheckResult) -> str:
    message = truncate(one_line(result.message), MESSAGE_LIMIT)
    cells = [
        md_escape(result.name),
        f"**{result.verdict.value.upper()}**",
        md_escape(value_text(result)),
        md_escape(interval_text(result.interval, result.unit, level=True)),
        md_escape(threshold_text(result)),
        md_escape(message),
    ]
    return "| " + " | ".join(cells) + " |"


#: a verdict as shown in the matrix and the headings: a mark to scan for, and the word
VERDICT_MARKS = {"error": "🛑", "fail": "❌", "warn": "⚠️", "pass": "✅", "skip": "⏭️"}


def verdict_mark(verdict: str) -> str:
    return f"{VERDICT_MARKS.get(verdict, '')} {verdict.upper()}".strip()


def matrix_section(report: RunReport) -> list[str]:
    """The verdict matrix: a row per subject (those that block first), a column per check."""
    matrix = verdict_matrix(report)
    if not matrix.rows or not matrix.checks:
        return []
    lines = [
        "| Quant | Verdict | " + " | ".join(md_escape(c) for c in matrix.checks) + " |",
        "|---|---|" + "---|" * len(matrix.checks),
    ]
    for row in matrix.rows:
        cells = [verdict_mark(c.verdict) if c is not None else "" for c in row.cells]
        lines.append(
            f"| {md_escape(row.label)} | **{verdict_mark(row.verdict)}** | "
            + " | ".join(cells)
            + " |"
        )
    return [*lines, ""]


def ladder_section(report: RunReport) -> list[str]:
    """With two subjects or more: the smallest passing quant and the ladder's figures."""
    ladder = quant_ladder(report)
    if ladder is None:
        return []
    table = ladder.table()
    lines = [f"**Quant ladder:** {md_escape(ladder.sentence)}", ""]
    lines.append("| " + " | ".join(md_escape(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines += [
        "| " + " | ".join(md_escape(c if c is not None else "") for c in row) + " |"
        for row in table.rows
    ]
    return [*lines, ""]


def subject_facts(subject: SubjectReport) -> str:
    facts = [f"path: {md_escape(subject.path)}"]
    if subject.backend:
        facts.append(f"backend: {md_escape(subject.backend)}")
    if subject_format(subject):
        facts.append(f"format: {md_escape(subject_format(subject))}")
    for key in ("architecture", "file_type", "bits_per_weight"):
        if subject.info.get(key) is not None:
            facts.append(f"{key.replace('_', ' ')}: {md_escape(subject.info[key])}")
    return " · ".join(facts)


def subject_section(subject: SubjectReport) -> list[str]:
    """A subject's facts and its results, failing rows first; folded into ``<details>`` when
    nothing of it blocks the gate."""
    verdict = subject.verdict.value
    body = [subject_facts(subject), ""]
    if not subject.results:
        body += ["_No results._", ""]
    else:
        body += [
            "| Check | Verdict | Value | Interval | Threshold | Message |",
            "|---|---|---|---|---|---|",
            *(result_row(r) for r in by_severity(subject.results)),
            "",
        ]
    if folded(subject):
        counts = counts_text(verdict_counts(subject.results))
        summary = f"<b>{md_escape(subject.label)}: {verdict_mark(verdict)}</b> ({counts})"
        return ["<details>", f"<summary>{summary}</summary>", "", *body, "</details>", ""]
    return [f"### {md_escape(subject.label)}: {verdict_mark(verdict)}", "", *body]


class MarkdownReporter(Reporter):
    """A headline verdict, the verdict matrix, the quant ladder, one table per subject (those
    that block first, the others folded), and a footer with the run's facts."""

    name = "markdown"
    description = "GitHub-flavoured Markdown summary (step summary or PR comment)"
    writes_file = True

    @writes_any_text
    def render(self, report: RunReport) -> str:
        verdict = report.verdict.value.upper()
        results = all_results(report)
        lines = [
            f"## qgate: {verdict}",
            "",
            f"**qgate: {verdict}** under policy **{md_escape(report.policy)}**: "
            f"{len(report.subjects)} subject{'s' if len(report.subjects) != 1 else ''}, "
            f"{len(results)} result{'s' if len(results) != 1 else ''} "
            f"({counts_text(verdict_counts(results))}); {report.coverage}",
            "",
        ]
        if report.incomplete:
            lines += [
                "> **INCOMPLETE RUN**: the run was interrupted or a subject could not be "
                "finished; some checks never ran, so the gate cannot pass.",
                "",
            ]
        lines += matrix_section(report)
        lines += ladder_section(report)
        for subject in subjects_worst_first(report):
            lines += subject_section(subject)
        lines += ["---", "", *self._provenance(report), self._footer(report), ""]
        return "\n".join(lines)

    @staticmethod
    def _provenance(report: RunReport) -> list[str]:
        """Short sha256 digests of what was measured, then versions and the machine."""
        lines = []
        digests = provenance_digests(report)
        if digests:
            parts = [
                f"{what} {md_escape(name)} "
                + (f"`{short}`" if _HEX.fullmatch(short) else md_escape(short))
                for what, name, short, _ in digests
            ]
            lines += ["<sub>sha256: " + " · ".join(parts) + "</sub>", ""]
        versions = provenance_versions(report)
        if versions:
            text = " · ".join(f"{md_escape(name)} {md_escape(v)}" for name, v in versions)
            machine = machine_summary(report)
            if machine:
                text += f" · on {md_escape(machine)}"
            lines += [f"<sub>versions: {text}</sub>", ""]
        return lines

    @staticmethod
    def _footer(report: RunReport) -> str:
        parts = [f"qgate {md_escape(report.qgate_version or 'unknown version')}"]
        parts.append(f"policy {md_escape(report.policy)}")
        # counter names are keys of the results file, as untrusted as its values
        parts += [f"{md_escape(name)}: {md_escape(value)}" for name, value in counters(report)]
        parts.append("run incomplete" if report.incomplete else "run complete")
        return "<sub>" + " · ".join(parts) + "</sub>"


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [MarkdownReporter()]
