"""The result model: what a check measured, the verdict, and the whole run.

Everything here is plain data that round-trips through JSON (``to_dict``/``from_dict``), so a
report can be re-rendered later (``qgate report``) or merged across CI shards without measuring
again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from qgate.figures import Figures, headline_values

RESULTS_SCHEMA_VERSION = 2


class Verdict(str, Enum):
    """The outcome of one measurement against its policy floor."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"

    @property
    def is_blocking(self) -> bool:
        """Whether this verdict fails the gate."""
        return self in (Verdict.FAIL, Verdict.ERROR)


class Severity(str, Enum):
    """What a failed floor does to the gate: ``fail`` blocks, ``warn`` only reports."""

    FAIL = "fail"
    WARN = "warn"


class SkipCause(str, Enum):
    """Why a check could not measure, which decides whether the skip may stand.

    A skip the user caused (no reference, a missing extra, a dataset or backend that does not
    fit) is not a pass: under a fail-severity check the policy's ``on_skip`` (default ``error``)
    blocks the gate. A skip because the reference itself gives no usable signal, or because the
    risk the check measures does not exist for this subject, may stand.
    """

    #: the measurement needs something this run lacks: a reference, an extra, data, a backend
    UNAVAILABLE = "unavailable"
    #: the reference itself gives no usable signal (it loops at full precision, scores ~0 %)
    NO_SIGNAL = "no-signal"
    #: the risk does not exist for this subject (a backend that keeps its KV cache unquantized)
    NOT_APPLICABLE = "not-applicable"

    @property
    def user_caused(self) -> bool:
        return self is SkipCause.UNAVAILABLE


class Comparison(str, Enum):
    """How a value is held against its threshold: ``<=`` means lower is better."""

    LE = "<="
    GE = ">="

    def holds(self, value: float, threshold: float) -> bool:
        return value <= threshold if self is Comparison.LE else value >= threshold


@dataclass
class Interval:
    """A confidence interval around a measured value."""

    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float | str | None]:
        return {"low": _json_float(self.low), "high": _json_float(self.high), "level": self.level}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        return cls(
            _read_float(data["low"]), _read_float(data["high"]), float(data.get("level", 0.95))
        )


@dataclass
class CheckResult:
    """One measured metric of one check on one subject, with its verdict.

    A check may return several results (one per metric or per dataset domain); each becomes one
    JUnit test case and one row in the reports.
    """

    check: str  #: the plugin name (``use:`` in the policy)
    check_id: str  #: the id in the policy (defaults to the plugin name)
    metric: str  #: e.g. ``ppl_delta`` or ``ppl_delta[code]``
    verdict: Verdict
    message: str
    value: float | None = None
    threshold: float | None = None
    comparison: Comparison | None = None
    interval: Interval | None = None
    unit: str = ""
    severity: Severity = Severity.FAIL
    #: what the report shows beside the numbers: tables, charts, samples (:mod:`qgate.figures`)
    figures: Figures = field(default_factory=Figures)
    #: this result's figures for run-level summaries, by :data:`qgate.figures.HEADLINES` key
    headlines: dict[str, float] = field(default_factory=dict)
    #: further measured facts, kept in the JSON for readers and tools (not rendered as such)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    #: the verdict an interval straddling the threshold got (recorded so that a reader can
    #: recompute the verdict from the numbers, see :mod:`qgate.integrity`)
    on_inconclusive: str | None = None
    #: why a ``skip`` (or a skip the policy turned into an ``error``) could not measure
    skip_cause: SkipCause | None = None
    #: what the policy's ``on_skip`` made of a user-caused skip (``error`` or ``skip``)
    on_skip: str | None = None

    @property
    def name(self) -> str:
        """The stable test-case name: ``check_id`` or ``check_id.metric``."""
        return (
            self.check_id
            if self.metric in ("", self.check_id)
            else f"{self.check_id}.{self.metric}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "check_id": self.check_id,
            "metric": self.metric,
            "verdict": self.verdict.value,
            "message": self.message,
            "value": _json_float(self.value),
            "threshold": _json_float(self.threshold),
            "comparison": self.comparison.value if self.comparison else None,
            "interval": self.interval.to_dict() if self.interval else None,
            "unit": self.unit,
            "severity": self.severity.value,
            "figures": self.figures.to_dict(),
            "headlines": _json_clean(self.headlines),
            "details": _json_clean(self.details),
            "duration_s": round(self.duration_s, 4),
            "on_inconclusive": self.on_inconclusive,
            "skip_cause": self.skip_cause.value if self.skip_cause else None,
            "on_skip": self.on_skip,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        interval = data.get("interval")
        return cls(
            check=data["check"],
            check_id=data["check_id"],
            metric=data.get("metric", ""),
            verdict=Verdict(data["verdict"]),
            message=data.get("message", ""),
            value=_read_float(data.get("value")),
            threshold=_read_float(data.get("threshold")),
            comparison=Comparison(data["comparison"]) if data.get("comparison") else None,
            interval=Interval.from_dict(interval) if interval else None,
            unit=data.get("unit", ""),
            severity=Severity(data.get("severity", "fail")),
            figures=Figures.from_dict(data.get("figures")),
            headlines=headline_values(data.get("headlines")),
            details=data.get("details") or {},
            duration_s=data.get("duration_s", 0.0),
            on_inconclusive=data.get("on_inconclusive"),
            skip_cause=SkipCause(data["skip_cause"]) if data.get("skip_cause") else None,
            on_skip=data.get("on_skip"),
        )


#: verdicts that come with a measurement (a skip or an error has none)
_MEASURED = frozenset({Verdict.PASS, Verdict.FAIL, Verdict.WARN})


@dataclass(frozen=True)
class Coverage:
    """How many fail-severity check entries produced a measurement, of those that ran."""

    measured: int
    planned: int

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(self.measured + other.measured, self.planned + other.planned)

    def __str__(self) -> str:
        return f"{self.measured} of {self.planned} fail-severity checks measured"


def coverage_of(results: list[CheckResult]) -> Coverage:
    """Fail-severity check entries (by ``check_id``) with at least one measured value.

    The "nothing was measured" marker qgate adds (check ``gate``) is not an entry of the policy.
    """
    entries: dict[str, bool] = {}
    for r in results:
        if r.severity is Severity.FAIL and r.check != "gate":
            measured = r.value is not None and r.verdict in _MEASURED
            entries[r.check_id] = entries.get(r.check_id, False) or measured
    return Coverage(sum(entries.values()), len(entries))


@dataclass
class SubjectReport:
    """All results for one model artifact under test."""

    path: str
    backend: str
    info: dict[str, Any] = field(default_factory=dict)  #: the backend's ``ModelInfo`` as a dict
    results: list[CheckResult] = field(default_factory=list)
    #: the check keys the policy applied to this subject, each of which must have a result
    planned: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return overall_verdict(self.results)

    @property
    def label(self) -> str:
        return str(self.info.get("label") or self.path)

    @property
    def coverage(self) -> Coverage:
        return coverage_of(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "backend": self.backend,
            "verdict": self.verdict.value,
            "info": _json_clean(self.info),
            "planned": list(self.planned),
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubjectReport:
        return cls(
            path=data["path"],
            backend=data.get("backend", ""),
            info=data.get("info") or {},
            results=[CheckResult.from_dict(r) for r in data.get("results", [])],
            planned=[str(key) for key in data.get("planned") or []],
        )


def nothing_measured(subject: SubjectReport) -> CheckResult | None:
    """An ``error`` for a subject on which no check measured anything, else None.

    Skips that may stand (no signal, not applicable) and warnings without a value cannot add up
    to a pass: a gate that measured nothing has not judged the quant.
    """
    if any(r.verdict.is_blocking or r.value is not None for r in subject.results):
        return None
    skipped = [r for r in subject.results if r.verdict is Verdict.SKIP]
    why = (
        "; ".join(f"{r.name}: {r.message}" for r in skipped[:3]) or "no check of the policy applies"
    )
    return CheckResult(
        check="gate",
        check_id="gate",
        metric="",
        verdict=Verdict.ERROR,
        message=f"nothing was measured on this subject, so it cannot pass ({why})",
    )


@dataclass
class RunReport:
    """A whole ``qgate check`` run: the policy, the reference, every subject, and run facts."""

    policy: str
    subjects: list[SubjectReport] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    #: set when the run was interrupted or a subject could not be finished
    incomplete: bool = False
    started_at: str = ""
    finished_at: str = ""
    qgate_version: str = ""
    #: counters that show work was shared: model loads, scoring passes, cache hits
    counters: dict[str, int] = field(default_factory=dict)
    #: wall time per phase (load, score, statistics, report), for ``--profile``
    timings: dict[str, float] = field(default_factory=dict)
    #: anything else a plugin or the CLI wants recorded (command line, versions, ...)
    environment: dict[str, Any] = field(default_factory=dict)
    #: set by ``qgate check --shard K/N``: ``index``, ``count``, ``units`` (what this shard ran),
    #: ``planned_units`` (the whole run's), ``policy_digest``; ``qgate merge`` joins on it
    shard: dict[str, Any] | None = None
    #: what exactly was measured: file and text digests, policy digest, versions, machine
    #: (see :mod:`qgate.provenance`); ``{}`` in results written before it was recorded
    provenance: dict[str, Any] = field(default_factory=dict)
    #: names the run this belongs to: shards of one CI run share it (``--run-id``), and
    #: ``qgate merge`` refuses files of different runs
    run_id: str = ""
    #: unique to the one ``qgate`` process that wrote the file: copies of one file share it,
    #: so ``qgate merge`` and the Action can tell a copy or a stale file from a fresh result
    invocation_id: str = ""

    @property
    def verdict(self) -> Verdict:
        verdict = overall_verdict([r for s in self.subjects for r in s.results])
        if self.incomplete and not verdict.is_blocking:
            return Verdict.ERROR
        return verdict

    @property
    def results(self) -> list[tuple[SubjectReport, CheckResult]]:
        return [(s, r) for s in self.subjects for r in s.results]

    @property
    def coverage(self) -> Coverage:
        return sum((s.coverage for s in self.subjects), Coverage(0, 0))

    @property
    def passes(self) -> bool:
        """Whether the gate is open: a complete run whose subjects passed (warnings allowed).

        A run that judged nothing (every result a skip) does not pass. A shard whose subjects
        all belong to other shards does: ``qgate merge`` judges the whole run.
        """
        if self.incomplete:
            return False
        verdict = self.verdict
        if verdict is Verdict.SKIP:
            return bool(self.shard) and not self.subjects
        return not verdict.is_blocking

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "qgate_version": self.qgate_version,
            "run_id": self.run_id,
            "invocation_id": self.invocation_id,
            "policy": self.policy,
            "verdict": self.verdict.value,
            "incomplete": self.incomplete,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "reference": _json_clean(self.reference),
            "counters": dict(self.counters),
            "timings": {k: _json_float(round(v, 4)) for k, v in self.timings.items()},
            "environment": _json_clean(self.environment),
            "shard": _json_clean(self.shard),
            "provenance": _json_clean(self.provenance),
            "subjects": [s.to_dict() for s in self.subjects],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        version = data.get("schema_version")
        if version != RESULTS_SCHEMA_VERSION:
            raise ValueError(
                f"results schema version {version!r} is not supported "
                f"(this qgate reads version {RESULTS_SCHEMA_VERSION})"
            )
        return cls(
            policy=data.get("policy", ""),
            subjects=[SubjectReport.from_dict(s) for s in data.get("subjects", [])],
            reference=data.get("reference"),
            incomplete=bool(data.get("incomplete", False)),
            started_at=data.get("started_at", ""),
            finished_at=data.get("finished_at", ""),
            qgate_version=data.get("qgate_version", ""),
            counters=data.get("counters") or {},
            timings=data.get("timings") or {},
            environment=data.get("environment") or {},
            shard=data.get("shard"),
            provenance=data.get("provenance") or {},
            run_id=str(data.get("run_id") or ""),
            invocation_id=str(data.get("invocation_id") or ""),
        )


#: verdicts from worst to best: error > fail > warn > pass > skip (nothing judged)
VERDICT_ORDER: tuple[Verdict, ...] = (
    Verdict.ERROR,
    Verdict.FAIL,
    Verdict.WARN,
    Verdict.PASS,
    Verdict.SKIP,
)


def overall_verdict(results: list[CheckResult]) -> Verdict:
    """The worst verdict among ``results``: error > fail > warn > pass > skip.

    An empty list is a ``skip``: nothing was judged, which is not the same as a pass.
    """
    present = {r.verdict for r in results}
    for verdict in VERDICT_ORDER:
        if verdict in present:
            return verdict
    return Verdict.SKIP


def _json_float(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: write them as strings so nothing is silently lost."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _read_float(value: Any) -> Any:
    """The inverse of :func:`_json_float`: ``"nan"``/``"inf"`` strings back to floats."""
    if isinstance(value, str):
        return float(value)
    return value


def _json_clean(obj: Any) -> Any:
    """Turn numpy scalars, tuples and non-finite floats into plain JSON values."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return _json_float(obj)
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return _json_clean(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy array
        return _json_clean(obj.tolist())
    if isinstance(obj, Enum):
        return obj.value
    return str(obj)
