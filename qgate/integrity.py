"""Reading a results file without trusting its verdicts.

A results file travels: it is uploaded as an artifact, downloaded by ``qgate merge``, read again by
``qgate report`` and by the Action's later steps. Anyone who can write it can flip a ``verdict``
from ``fail`` to ``pass``. Every verdict is therefore recomputed here from what the result
records beside it (value, interval, threshold, comparison, severity, the ``on_inconclusive`` in
effect, the skip cause and the policy's ``on_skip``), and a file whose verdicts disagree with its
numbers is refused. So is a subject that lacks a result for a check the policy applied to it.

This catches edited verdicts and deleted results. It cannot catch a file rewritten wholesale with
invented numbers: for that, sign the results (``qgate check --attestation``, docs/provenance.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgate.errors import UsageError
from qgate.results import CheckResult, Comparison, RunReport, Severity, Verdict
from qgate.stats import decide, inconclusive_verdict

#: the ``check`` of results that qgate itself adds (a subject that could not be opened, a unit a
#: shard did not run, a subject where nothing was measured); their verdict is always ``error``
CORE_CHECKS = frozenset({"load", "shard", "gate"})


def read_results(path: Path) -> RunReport:
    """The run in ``path``, its verdicts checked against its numbers.

    :raises UsageError: when the file cannot be read, is not a qgate results file, or records a
        verdict that its own numbers contradict.
    """
    data = results_json(path)
    try:
        if not isinstance(data, dict):
            raise TypeError("the top level is not an object")
        report = RunReport.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a qgate results file: {exc}") from None
    problems = verdict_problems(report)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UsageError(
            f"{path}: the recorded verdicts disagree with the recorded numbers, so the file was "
            f"edited or damaged: {'; '.join(problems[:3])}{more}"
        )
    return report


def results_json(path: Path) -> Any:
    """The JSON document in ``path``; a usage error when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a qgate results file: {exc}") from None


def expected_verdict(result: CheckResult) -> Verdict | None:
    """The verdict ``result``'s own numbers give, or None when they give none (a result with
    neither a value nor a threshold: a skip, an error, an undecided identity)."""
    if result.value is None and result.threshold is None:
        return None
    verdict, _ = decide(
        result.value,
        result.threshold,
        result.comparison or Comparison.LE,
        interval=result.interval,
        on_inconclusive=result.on_inconclusive or "warn",
        severity=result.severity,
    )
    if result.details.get("supporting") and verdict.is_blocking:
        return Verdict.WARN  # evidence that did not decide is reported, never blocking
    return verdict


def verdict_problems(report: RunReport) -> list[str]:
    """Every result whose recorded verdict its numbers contradict, and every planned check
    without a result, as ``subject: name: what is wrong``."""
    problems = []
    for subject in report.subjects:
        for result in subject.results:
            problem = _result_problem(result)
            if problem:
                problems.append(f"{subject.label}: {result.name}: {problem}")
        if report.incomplete or _subject_stopped_early(subject):
            continue  # checks that never ran have no result; the run already cannot pass
        present = {r.check_id for r in subject.results}
        problems += [
            f"{subject.label}: {key}: the policy applied this check, but it has no result"
            for key in subject.planned
            if key not in present
        ]
    return problems


def _result_problem(result: CheckResult) -> str:
    recorded = result.verdict
    if result.check in CORE_CHECKS and not result.value and result.threshold is None:
        return "" if recorded is Verdict.ERROR else f"recorded {recorded.value}, but it is an error"
    if result.threshold is not None and result.comparison is None:
        return "a threshold without a comparison"
    expected = expected_verdict(result)
    if expected is not None:
        if recorded is not expected:
            return (
                f"recorded {recorded.value}, but value {result.value} against "
                f"{_limit(result)} gives {expected.value}"
            )
        return ""
    if recorded is Verdict.ERROR:
        return ""
    if recorded is Verdict.SKIP:
        if result.skip_cause is None:
            return "a skip that records no cause"
        if (
            result.skip_cause.user_caused
            and result.severity is Severity.FAIL
            and result.on_skip != "skip"
        ):
            return (
                f"a fail-severity check that could not measure ({result.skip_cause.value}) is "
                f"an error under on_skip {result.on_skip or 'error'!r}"
            )
        return ""
    if result.on_inconclusive is not None and result.details.get("inconclusive"):
        allowed = inconclusive_verdict(result.on_inconclusive, result.severity)
        if recorded is allowed:
            return ""
        return f"recorded {recorded.value}, but an undecided result takes on_inconclusive ({allowed.value})"
    return f"recorded {recorded.value} without a measured value"


def _subject_stopped_early(subject: object) -> bool:
    """A subject that could not be opened has only its load error: nothing else ran."""
    results = getattr(subject, "results", [])
    return any(r.check == "load" and r.verdict is Verdict.ERROR for r in results)


def _limit(result: CheckResult) -> str:
    if result.threshold is None:
        return "no threshold"
    comparison = result.comparison.value if result.comparison else "?"
    interval = (
        f" (interval [{result.interval.low}, {result.interval.high}])" if result.interval else ""
    )
    return f"limit {comparison} {result.threshold}{interval}"
