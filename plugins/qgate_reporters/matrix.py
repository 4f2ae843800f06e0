"""The verdict matrix: one row per subject, one column per check of the policy, each cell the
worst verdict that check gave that subject. It opens the HTML report and the Markdown summary,
so what blocks the gate is the first thing read; rows that block come first.

Columns follow the order in which the checks first appear in the results (the policy's order);
a check that did not run on a subject (another shard's unit, a ``when:`` that did not match)
leaves its cell empty. Nothing here writes markup.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgate.results import CheckResult, RunReport, SubjectReport, overall_verdict
from qgate_reporters._common import one_line, subjects_worst_first


@dataclass
class Cell:
    verdict: str  #: the worst verdict of the check's results on the subject
    results: int  #: how many results it gave (one per metric or domain)
    #: the metrics behind the verdict, e.g. ``ppl_delta[ja]``, for a tooltip
    worst: list[str]

    @property
    def text(self) -> str:
        return self.verdict.upper()


@dataclass
class Row:
    label: str
    verdict: str
    subject: SubjectReport
    cells: list[Cell | None]


@dataclass
class VerdictMatrix:
    checks: list[str]
    rows: list[Row]


def check_columns(report: RunReport) -> list[str]:
    """Every check id in the results, in the order it first appears."""
    seen: dict[str, None] = {}
    for subject in report.subjects:
        for result in subject.results:
            seen.setdefault(result.check_id, None)
    return list(seen)


def cell(results: list[CheckResult]) -> Cell | None:
    if not results:
        return None
    verdict = overall_verdict(results)
    worst = [one_line(r.metric or r.check_id) for r in results if r.verdict is verdict]
    return Cell(verdict.value, len(results), worst)


def verdict_matrix(report: RunReport) -> VerdictMatrix:
    checks = check_columns(report)
    rows = []
    for subject in subjects_worst_first(report):
        by_check: dict[str, list[CheckResult]] = {}
        for result in subject.results:
            by_check.setdefault(result.check_id, []).append(result)
        cells = [cell(by_check.get(check, [])) for check in checks]
        rows.append(Row(one_line(subject.label), subject.verdict.value, subject, cells))
    return VerdictMatrix(checks, rows)
