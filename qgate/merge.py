"""``qgate merge``: join the results of the shards of one run into one report and one verdict.

Nothing is dropped silently. A shard that is missing (fewer files than N, or a planned unit that no
file ran) or that did not finish (interrupted, marked incomplete) becomes an ``error`` result on
each subject it should have judged, saying which shard and which units, so the merged gate fails
(exit 1) and the report says why. Results of different splits (a different N) or of a different
policy digest measured different things: merging them is a usage error (exit 2).

Whole runs (results written without ``--shard``) can be merged too, e.g. one job per quant: their
subjects are joined, and a policy that differs between them is a usage error.

Nothing is counted twice or joined with something else either (exit 2, naming the files): a file
given twice (two files with one ``invocation_id``: a copy), shards of different runs (different
``run_id``), and files whose ``provenance`` says they measured different things (resolved policy,
number-changing backend options, reference or dataset digests). A file without provenance cannot
be checked, so it cannot be merged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qgate import __version__
from qgate.errors import UsageError
from qgate.provenance import merge_provenance
from qgate.results import (
    CheckResult,
    RunReport,
    Severity,
    SubjectReport,
    Verdict,
    nothing_measured,
)
from qgate.shard import SPEED_ONLY_OPTIONS, Unit, shard_of

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
    refuse_copies(inputs)
    if sharded:
        refuse_other_runs(sharded)
        return _merge_shards(sharded)
    refuse_different_measurements(inputs)
    return _merge_whole_runs(inputs)


# -- what may be joined -----------------------------------------------------------------------
def refuse_copies(inputs: Sequence[tuple[str, RunReport]]) -> None:
    """Refuse a file given twice: every ``qgate check`` process writes a fresh ``invocation_id``,
    so two files that share one are copies, and merging them would count one run as two (four
    copies of a passing shard once merged to PASS). A file without one cannot be told apart from
    its copies, so it is refused too."""
    unnamed = [name for name, report in inputs if not report.invocation_id]
    if unnamed:
        raise UsageError(
            f"{', '.join(unnamed)}: no invocation id in the results, so a copy of the file could "
            "not be told from another run (written by an older qgate, or edited): run qgate check "
            "again with this version"
        )
    groups = _group(inputs, lambda report: report.invocation_id)
    copies = [names for names in groups.values() if len(names) > 1]
    if copies:
        listing = "; ".join(" = ".join(names) for names in copies)
        raise UsageError(
            f"the same results given more than once (copies of one qgate run, equal invocation "
            f"ids): {listing}; merge each run's results once"
        )


def refuse_other_runs(inputs: Sequence[tuple[str, RunReport]]) -> None:
    """Refuse shards of different runs (``--run-id``): a shard of yesterday's run, or of
    another pull request, cannot stand in for a shard of this one."""
    groups = _group(inputs, lambda report: report.run_id)
    if len(groups) > 1:
        listing = "; ".join(
            f"run {run_id or '(none)'!r}: {', '.join(names)}" for run_id, names in groups.items()
        )
        raise UsageError(
            f"the shards come from different runs (their run ids differ): {listing}; merge the "
            "shards of one run (qgate check --run-id, the same for every shard)"
        )


def refuse_different_measurements(inputs: Sequence[tuple[str, RunReport]]) -> None:
    """Refuse files that measured different things, by what their ``provenance`` records: the
    resolved policy's digest (a policy's ``name:`` says nothing), the backend options that change
    numbers, the reference's digest and the evaluation texts' digests."""
    prints = [(name, measured(name, report)) for name, report in inputs]
    differences = []
    for aspect in MEASURED_ASPECTS:
        values: dict[str, list[str]] = {}
        for name, fingerprint in prints:
            value = fingerprint[aspect]
            if value is not None:  # not recorded by an interrupted run: reported as incomplete
                values.setdefault(value, []).append(name)
        if len(values) > 1:
            listing = "; ".join(f"{_short(v)} in {', '.join(n)}" for v, n in values.items())
            differences.append(f"{aspect} differs: {listing}")
    if differences:
        raise UsageError(
            "the results measured different things, so their verdicts cannot be joined: "
            + " | ".join(differences)
        )


#: what two results must share to be merged, in the order a difference is reported
MEASURED_ASPECTS = ("policy digest", "backend options", "reference", "datasets")


def measured(name: str, report: RunReport) -> dict[str, str | None]:
    """What ``report`` measured, from its provenance: one comparable text per aspect of
    :data:`MEASURED_ASPECTS`, or None where an interrupted run did not record it (it is then
    reported as incomplete, not as different)."""
    provenance = report.provenance
    policy = provenance.get("policy") if isinstance(provenance, dict) else None
    if not isinstance(policy, dict) or not policy.get("sha256"):
        raise UsageError(
            f"{name}: the results record no provenance (the policy, reference and dataset "
            "digests), so nothing shows that they measured the same thing as the other files: "
            "run qgate check again with this version"
        )
    options = policy.get("backend_options") or {}
    numeric = {k: v for k, v in options.items() if k not in SPEED_ONLY_OPTIONS}
    reference = provenance.get("reference")
    if reference is None:
        reference_text: str | None = "none"
    else:
        digest = reference.get("sha256") if isinstance(reference, dict) else None
        reference_text = str(digest) if digest else ("unknown" if not report.incomplete else None)
    datasets = sorted(
        f"{record.get('domain')}={record.get('sha256')}"
        for record in provenance.get("datasets") or []
        if isinstance(record, dict)
    )
    return {
        "policy digest": str(policy["sha256"]),
        "backend options": json.dumps(numeric, sort_keys=True, default=str),
        "reference": reference_text,
        "datasets": ", ".join(datasets) or "none",
    }


def _short(value: str) -> str:
    """Digests shortened to 12 hex digits for the message; other values as they are."""
    parts = []
    for part in value.split(", "):
        key, sep, digest = part.rpartition("=")
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            parts.append(f"{key}{sep}{digest[:12]}")
        else:
            parts.append(part)
    return ", ".join(parts)


def _group(
    inputs: Sequence[tuple[str, RunReport]], key: Callable[[RunReport], str]
) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, report in inputs:
        groups.setdefault(key(report), []).append(name)
    return groups


# -- shards ---------------------------------------------------------------------------------
#: shard index -> (file name, its report, the units it ran), for the shards of one plan
Shards = dict[int, tuple[str, RunReport, list[Unit]]]


def _merge_shards(inputs: list[tuple[str, RunReport]]) -> MergeOutcome:
    shards = [(name, report, _shard_info(name, report)) for name, report in inputs]
    count, policy_digest = _one_split(shards)
    refuse_different_measurements(inputs)
    plans = _plans(shards, count)
    merged = _empty_report([report for _, report, _ in shards])
    order = _check_order([info for _, _, info in shards])
    subjects: dict[str, SubjectReport] = {}
    problems: list[str] = []
    for planned, by_index in plans.items():
        for unit in planned:
            subjects.setdefault(unit.subject, SubjectReport(path=unit.subject, backend=""))
        for unit, message in _unfinished(planned, by_index, count, subjects, problems):
            subjects[unit.subject].results.append(_missing_result(unit, message))
    for subject in subjects.values():  # each shard saw part of the checks: judge the whole
        unmeasured = nothing_measured(subject)
        if unmeasured is not None:
            subject.results.append(unmeasured)
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
        "policy_digest": policy_digest,
    }
    return MergeOutcome(merged, problems)


def _one_split(shards: list[tuple[str, RunReport, dict[str, Any]]]) -> tuple[int, str]:
    """The shards' common count N and policy digest; a usage error when they differ."""
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
    return counts.pop(), str(digests.pop())


def _plans(
    shards: list[tuple[str, RunReport, dict[str, Any]]], count: int
) -> dict[tuple[Unit, ...], Shards]:
    """The shards grouped by the plan they belong to (several plans may be merged, e.g. one
    sharded run per quant); a shard given twice is a usage error."""
    plans: dict[tuple[Unit, ...], Shards] = {}
    for name, report, info in shards:
        by_index = plans.setdefault(tuple(info["planned"]), {})
        if info["index"] in by_index:
            raise UsageError(
                f"shard {info['index']}/{count} given twice: {by_index[info['index']][0]} and {name}"
            )
        by_index[info["index"]] = (name, report, info["units"])
    return plans


def _unfinished(
    planned: tuple[Unit, ...],
    by_index: Shards,
    count: int,
    subjects: dict[str, SubjectReport],
    problems: list[str],
) -> list[tuple[Unit, str]]:
    """Absorb one plan's shards into ``subjects``; return every unit that a shard did not
    finish (interrupted) or that no shard ran, with why, and add the reasons to ``problems``."""
    missing: list[tuple[Unit, str]] = []
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
    return missing


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
    run_ids = {r.run_id for r in reports}
    return RunReport(
        policy=reports[0].policy,
        reference=next((r.reference for r in reports if r.reference), None),
        started_at=min(started) if started else "",
        finished_at=max(finished) if finished else "",
        qgate_version=reports[0].qgate_version or __version__,
        counters=counters,
        timings=timings,
        provenance=merge_provenance([r.provenance for r in reports]),
        # the parts' run, when they share one (shards always do); the merge is a new result
        run_id=run_ids.pop() if len(run_ids) == 1 else "",
        invocation_id=uuid.uuid4().hex,
    )


def _absorb(subjects: dict[str, SubjectReport], report: RunReport) -> None:
    """Add ``report``'s subjects: one subject per path, results concatenated."""
    for part in report.subjects:
        subject = subjects.setdefault(part.path, SubjectReport(path=part.path, backend=""))
        subject.backend = subject.backend or part.backend
        subject.info = subject.info or part.info
        subject.planned += [key for key in part.planned if key not in subject.planned]
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
