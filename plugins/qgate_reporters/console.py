"""The ``console`` reporter: a plain-text table for a terminal or a CI log."""

from __future__ import annotations

import unicodedata

from qgate.hookspecs import hookimpl
from qgate.reporter import Reporter
from qgate.results import RunReport, SubjectReport
from qgate_reporters._common import (
    all_results,
    counters,
    counts_text,
    one_line,
    prints_safely,
    value_summary,
    verdict_counts,
)
from qgate_reporters.ladder import quant_ladder

#: the widest line the table aims for
LINE_WIDTH = 120
_NAME_MAX = 40
_VALUE_MAX = 48
_MESSAGE_MIN = 20
_VERDICT_WIDTH = 7  # "VERDICT", "ERROR"
_INDENT = "  "
_GAP = "  "


def char_width(char: str) -> int:
    """Terminal columns taken by ``char``: 0 for combining marks, 2 for wide CJK characters."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(c) for c in text)


def fit(text: str, width: int, *, pad: bool = True) -> str:
    """``text`` cut (with an ellipsis) to ``width`` columns, padded with spaces when ``pad``."""
    if text_width(text) > width:
        out, used = [], 0
        for char in text:
            w = char_width(char)
            if used + w > width - 1:
                break
            out.append(char)
            used += w
        text = "".join(out) + "…"
    if pad:
        text += " " * max(0, width - text_width(text))
    return text


class ConsoleReporter(Reporter):
    """Per subject a header and one row per result; then the overall verdict and counts."""

    name = "console"
    description = "plain-text table on stdout"
    writes_file = False

    @prints_safely
    def render(self, report: RunReport) -> str:
        title = f"qgate {report.qgate_version}".rstrip() + f" | policy: {one_line(report.policy)}"
        lines = [fit(title, LINE_WIDTH, pad=False), ""]
        for subject in report.subjects:
            lines.extend(self._subject(subject))
            lines.append("")
        if not report.subjects:
            lines.extend(["(no subjects)", ""])
        summary = (
            f"qgate: {report.verdict.value.upper()} "
            f"({len(report.subjects)} subject{'s' if len(report.subjects) != 1 else ''}: "
            f"{counts_text(verdict_counts(all_results(report)))}; {report.coverage})"
        )
        if report.incomplete:
            summary += " INCOMPLETE: the run was interrupted or a subject could not be finished"
        ladder = quant_ladder(report)
        if ladder is not None:
            lines.append(fit(f"Quant ladder: {ladder.sentence}", LINE_WIDTH, pad=False))
        shown = counters(report)
        if shown:
            lines.append(fit(", ".join(f"{k}: {v}" for k, v in shown), LINE_WIDTH, pad=False))
        lines.append(fit(summary, LINE_WIDTH, pad=False))
        return "\n".join(lines) + "\n"

    def _subject(self, subject: SubjectReport) -> list[str]:
        label = one_line(subject.label)
        header = f"{label}  [{subject.verdict.value.upper()}]"
        where = ", ".join(x for x in (one_line(subject.backend), one_line(subject.path)) if x)
        if where and one_line(subject.path) != label:
            header += f"  ({where})"
        elif subject.backend:
            header += f"  ({one_line(subject.backend)})"
        lines = [fit(header, LINE_WIDTH, pad=False)]
        if not subject.results:
            return [*lines, f"{_INDENT}(no results)"]
        rows = [
            (
                r.verdict.value.upper(),
                one_line(r.name),
                one_line(value_summary(r)),
                one_line(r.message),
            )
            for r in subject.results
        ]
        name_w = min(_NAME_MAX, max(text_width("CHECK"), *(text_width(r[1]) for r in rows)))
        value_w = min(_VALUE_MAX, max(text_width("VALUE"), *(text_width(r[2]) for r in rows)))
        used = len(_INDENT) + _VERDICT_WIDTH + name_w + value_w + 3 * len(_GAP)
        message_w = max(_MESSAGE_MIN, LINE_WIDTH - used)
        for verdict, name, value, message in [("VERDICT", "CHECK", "VALUE", "MESSAGE"), *rows]:
            line = _GAP.join(
                (
                    fit(verdict, _VERDICT_WIDTH),
                    fit(name, name_w),
                    fit(value, value_w),
                    fit(message, message_w, pad=False),
                )
            )
            lines.append((_INDENT + line).rstrip())
        return lines


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [ConsoleReporter()]
