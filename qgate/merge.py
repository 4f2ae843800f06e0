"""``qgate merge``: join the results of the shards of one run into one report and one verdict.

Nothing is dropped silently. A shard that is missing (fewer files than N, or a planned unit that no
file ran) or that did not finish (interrupted, marked incomplete) becomes an ``error`` result on
each subject it should have judged, saying which shard and which units, so the merged gate fails
(exit 1) and the report says why. Results of different splits (a different N) or of a different
policy digest measured different things: merging them is a usage error (exit 2).

Whole runs (results written without ``--shard``) can be merged too, e.g. one job per quant: their
subjects are joined, and a policy that differs between them is a usage error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qgate import __version__
from qgate.errors import UsageError
from qgate.provenance import merge_provenance
from qgate.results import CheckResult, RunReport, Severity, SubjectReport, Verdict
from qgate.shard import Unit, shard_of

#: the ``check`` of the error results that stand for units nobody ran
MERGE_CHECK = "shard"


@dataclass
class MergeOutcome:
    """The merged report, and every problem found (missing or incomplete shards)."""

    report: RunReport
    problems: list[str] = field(default_factory=list)


def merge_results(inputs: Sequence[tuple[str, RunReport]]) -> MergeOutcome:
    """Merge ``(file name, report)`` pairs: all of them shards, or all of them whole runs."""
    if not inputs:
        raise UsageError("qgate merge needs at least one results file")
    sharded = [(name, r) for name, r in inputs if r.shard]
    if sharded and len(sharded) != len(inputs):
        whole = [name for name, r in inputs if not r.shard]
        raise UsageError(
            "cannot merge shard results (qgate check --shard) with whole runs: "
            f"{', '.join(whole)} {'was' if len(whole) == 1 else 'were'} not run with --shard"
        )
    if sharded:
        return _merge_shards(sharded)
    return _merge_whole_runs(inputs)


# -- shards ---------------------------------------------------------------------------------
def _merge_shards(inputs: list[tuple[str, RunReport]]) -> MergeOutcome:
    shards = [(name, report, _shard_info(name, report)) for name, report in inputs]
    counts = {info["count"] for _, _, info in shards}
    if len(counts) > 1:
        listing = ", ".join(
            f"{name} is {info['index']}/{info['count']}" for name, _, info in shards
        )
        raise UsageError(
            f"the results come from runs split different ways ({listing}): merge the shards of "
            "one run, all with the same --shard K/N count"
        )
    digests = {info["policy_digest"] for _, _, info in shards}
    if len(digests) > 1:
        listing = ", ".join(
            f"{name}: policy {report.policy!r} ({str(info['policy_digest'])[:12]})"
            for name, report, info in shards
        )
        raise UsageError(
            "the shards measured different things (their policy digests differ: policy, check "
            f"options, datasets or scoring settings): {listing}"
        )
    count = counts.pop()
    # Shards of one plan together; several plans may be merged (e.g. one sharded run per quant).
    plans: dict[tuple[Unit, ...], dict[int, tuple[str, RunReport, list[Unit]]]] = {}
    for name, report, info in shards:
        planned = tuple(info["planned"])
        by_index = plans.setdefault(planned, {})
        if info["index"] in by_index:
            raise UsageError(
                f"shard {info['index']}/{count} given twice: {by_index[info['index']][0]} and {name}"
            )
        by_index[info["index"]] = (name, report, info["units"])

    merged = _empty_report([report for _, report, _ in shards])
    order = _check_order([info for _, _, info in shards])
    subjects: dict[str, SubjectReport] = {}
    problems: list[str] = []
    missing: list[tuple[Unit, str]] = []
    for planned, by_index in plans.items():
        for unit in planned:
            subjects.setdefault(unit.subject, SubjectReport(path=unit.subject, backend=""))
        ran: set[Unit] = set()
        for index in sorted(by_index):
            name, report, units = by_index[index]
            ran.update(units)
            _absorb(subjects, report)
            if report.incomplete:
                labels = ", ".join(u.label for u in units) or "none"
                message = (
                    f"shard {index}/{count} incomplete ({name}: the run was interrupted or "
                    f"could not finish): results of units {labels} may be partial"
                )
                problems.append(message)
                missing.extend((u, message) for u in units)
        not_run = [u for u in planned if u not in ran]
        for shard in sorted({shard_of(u, count) for u in not_run}):
            units = [u for u in not_run if shard_of(u, count) == shard]
            labels = ", ".join(u.label for u in units)
            if shard in by_index:  # the file is there but did not run them (another version?)
                message = f"shard {shard}/{count} ({by_index[shard][0]}) did not run units {labels}"
            else:
                message = f"shard {shard}/{count} missing: units {labels} were not run"
            problems.append(message)
            missing.extend((u, message) for u in units)
    for unit, message in missing:
        subjects[unit.subject].results.append(_missing_result(unit, message))
    merged.subjects = [_ordered(s, order) for s in subjects.values()]
    merged.environment = {
        "command": "qgate merge",
        "merged_from": [name for name, _ in inputs],
        "shards": {
            "count": count,
            "files": {
                str(index): name
                for by_index in plans.values()
                for index, (name, _, _) in by_index.items()
            },
            "problems": problems,
        },
        "policy_digest": digests.pop(),
    }
    return MergeOutcome(merged, problems)


def _shard_info(name: str, report: RunReport) -> dict[str, Any]:
    shard = report.shard or {}
    try:
        index, count = int(shard["index"]), int(shard["count"])
        planned = [Unit.from_dict(u) for u in shard["planned_units"]]
        units = [Unit.from_dict(u) for u in shard["units"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{name}: the shard record is damaged ({type(exc).__name__}: {exc})"
        ) from None
    if not 1 <= index <= count:
        raise UsageError(f"{name}: shard {index}/{count} is not a valid shard")
    return {
        "index": index,
        "count": count,
        "planned": planned,
        "units": units,
        "policy_digest": shard.get("policy_digest") or report.policy,
        "check_order": list(shard.get("check_order") or []),
    }


def _check_order(infos: list[dict[str, Any]]) -> dict[str, int]:
    """Policy order of the check keys (and of the groups, at their first check)."""
    order: dict[str, int] = {}
    for info in infos:
        for key in info["check_order"]:
            order.setdefault(key, len(order))
    for info in infos:
        for unit in info["planned"]:
            for key in unit.checks:
                order.setdefault(key, len(order))
            order.setdefault(
                unit.group, min(order[k] for k in unit.checks) if unit.checks else len(order)
            )
    return order


def _missing_result(unit: Unit, message: str) -> CheckResult:
    return CheckResult(
        check=MERGE_CHECK,
        check_id=unit.group,
        metric="",
        verdict=Verdict.ERROR,
        message=message,
        severity=Severity.FAIL,
        details={"unit": unit.to_dict()},
    )


# -- whole runs -----------------------------------------------------------------------------
def _merge_whole_runs(inputs: Sequence[tuple[str, RunReport]]) -> MergeOutcome:
    policies = {report.policy for _, report in inputs}
    if len(policies) > 1:
        listing = ", ".join(f"{name}: {report.policy!r}" for name, report in inputs)
        raise UsageError(f"the results were judged under different policies: {listing}")
    merged = _empty_report([report for _, report in inputs])
    subjects: dict[str, SubjectReport] = {}
    problems = []
    for name, report in inputs:
        _absorb(subjects, report)
        if report.incomplete:
            message = (
                f"{name}: the run was interrupted or could not finish; its results are partial"
            )
            problems.append(message)
            paths = [s.path for s in report.subjects] or [name]
            for path in paths:
                subject = subjects.setdefault(path, SubjectReport(path=path, backend=""))
                subject.results.append(
                    CheckResult(
                        check=MERGE_CHECK,
                        check_id="incomplete",
                        metric="",
                        verdict=Verdict.ERROR,
                        message=message,
                    )
                )
    merged.subjects = list(subjects.values())
    merged.environment = {
        "command": "qgate merge",
        "merged_from": [name for name, _ in inputs],
        "problems": problems,
    }
    return MergeOutcome(merged, problems)


# -- shared ---------------------------------------------------------------------------------
def _empty_report(reports: list[RunReport]) -> RunReport:
    counters: dict[str, int] = {}
    timings: dict[str, float] = {}
    for report in reports:
        for key, value in report.counters.items():
            counters[key] = counters.get(key, 0) + int(value)
        for key, seconds in report.timings.items():
            try:
                timings[key] = timings.get(key, 0.0) + float(seconds)
            except (TypeError, ValueError):
                continue
    started = [r.started_at for r in reports if r.started_at]
    finished = [r.finished_at for r in reports if r.finished_at]
    return RunReport(
        policy=reports[0].policy,
        reference=next((r.reference for r in reports if r.reference), None),
        started_at=min(started) if started else "",
        finished_at=max(finished) if finished else "",
        qgate_version=reports[0].qgate_version or __version__,
        counters=counters,
        timings=timings,
        provenance=merge_provenance([r.provenance for r in reports]),
    )


def _absorb(subjects: dict[str, SubjectReport], report: RunReport) -> None:
    """Add ``report``'s subjects: one subject per path, results concatenated."""
    for part in report.subjects:
        subject = subjects.setdefault(part.path, SubjectReport(path=part.path, backend=""))
        subject.backend = subject.backend or part.backend
        subject.info = subject.info or part.info
        for result in part.results:
            if result.check_id == "load" and any(
                r.check_id == "load" and r.message == result.message for r in subject.results
            ):
                continue  # each shard that opened a broken subject said the same: say it once
            subject.results.append(result)


def _ordered(subject: SubjectReport, order: dict[str, int]) -> SubjectReport:
    """Results in policy order, as one unsharded run lists them (load errors first)."""
    subject.results.sort(key=lambda r: order.get(r.check_id, -1))
    return subject
