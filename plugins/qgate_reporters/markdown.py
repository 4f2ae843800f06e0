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
    counters,
    counts_text,
    interval_text,
    machine_summary,
    one_line,
    provenance_digests,
    provenance_versions,
    subject_format,
    threshold_text,
    truncate,
    value_text,
    verdict_counts,
    writes_any_text,
)
from qgate_reporters.ladder import quant_ladder

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


def subject_section(subject: SubjectReport) -> list[str]:
    lines = [f"### {md_escape(subject.label)}: {subject.verdict.value.upper()}", ""]
    facts = [f"path: {md_escape(subject.path)}"]
    if subject.backend:
        facts.append(f"backend: {md_escape(subject.backend)}")
    if subject_format(subject):
        facts.append(f"format: {md_escape(subject_format(subject))}")
    for key in ("architecture", "file_type", "bits_per_weight"):
        if subject.info.get(key) is not None:
            facts.append(f"{key.replace('_', ' ')}: {md_escape(subject.info[key])}")
    lines += [" · ".join(facts), ""]
    if not subject.results:
        return [*lines, "_No results._", ""]
    lines += [
        "| Check | Verdict | Value | Interval | Threshold | Message |",
        "|---|---|---|---|---|---|",
    ]
    lines += [result_row(r) for r in subject.results]
    lines.append("")
    return lines


class MarkdownReporter(Reporter):
    """A headline verdict, one table per subject, and a footer with the run's facts."""

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
        ladder = quant_ladder(report)
        if ladder is not None:
            lines += [f"**Quant ladder:** {md_escape(ladder.sentence)}", ""]
        for subject in report.subjects:
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
