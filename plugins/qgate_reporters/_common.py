"""Helpers shared by the built-in reporters: numbers, verdict counts and short texts."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from qgate import DISTRIBUTION
from qgate.check import format_value
from qgate.figures import as_float
from qgate.results import VERDICT_ORDER, CheckResult, Interval, RunReport, SubjectReport, Verdict
from qgate.text import printable, writable

#: the counters worth showing in a summary footer, with their human names
COUNTER_NAMES: tuple[tuple[str, str], ...] = (
    ("model_loads", "model loads"),
    ("scoring_passes", "scoring passes"),
    ("reference_cache_hits", "reference cache hits"),
    ("reference_cache_rejected", "reference cache entries discarded"),
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NEWLINES = re.compile(r"\r\n|\r|\n|\t")

_Self = TypeVar("_Self")
Render = Callable[[_Self, RunReport], str]


def writes_any_text(render: Render[_Self]) -> Render[_Self]:
    """Decorate a reporter's ``render`` so that its output is always writable (see
    :func:`writable`), whatever strings the report carries: the one place every file
    reporter shares, so no field can be forgotten."""

    @functools.wraps(render)
    def wrapper(self: _Self, report: RunReport) -> str:
        return writable(render(self, report))

    return wrapper


def prints_safely(render: Render[_Self]) -> Render[_Self]:
    """Like :func:`writes_any_text`, for text shown on a terminal: each line also loses
    escape sequences and control characters (:func:`qgate.progress.printable`), so a label
    such as ``"\\x1b[2J"`` cannot drive the terminal."""

    @functools.wraps(render)
    def wrapper(self: _Self, report: RunReport) -> str:
        return "\n".join(printable(line) for line in render(self, report).split("\n"))

    return wrapper


def is_finite(value: Any) -> bool:
    number = as_float(value)
    return number is not None and math.isfinite(number)


def fmt(value: Any, unit: str = "") -> str:
    """``format_value`` that also accepts the strings a JSON round trip leaves behind."""
    number = as_float(value)
    if number is None:
        return "n/a" if value is None else str(value)
    return format_value(number, unit)


def value_text(result: CheckResult) -> str:
    """The measured value with its unit, or ``""`` when the result has none."""
    return "" if result.value is None else fmt(result.value, result.unit)


def interval_text(interval: Interval | None, unit: str = "", *, level: bool = False) -> str:
    """``[low, high]``, optionally followed by the confidence level: ``[a, b] 95%``."""
    if interval is None:
        return ""
    text = f"[{fmt(interval.low, unit)}, {fmt(interval.high, unit)}]"
    conf = as_float(interval.level)
    if level and conf is not None and math.isfinite(conf):
        text += f" {conf * 100:g}%"
    return text


def threshold_text(result: CheckResult) -> str:
    """``<= 0.0100`` (the comparison and the floor), or ``""`` without a threshold."""
    if result.threshold is None:
        return ""
    limit = fmt(result.threshold, result.unit)
    return f"{result.comparison.value} {limit}" if result.comparison is not None else limit


def value_summary(result: CheckResult) -> str:
    """``1.0282 [1.0210, 1.0350] (limit <= 1.0100)``: value, interval and threshold together."""
    parts = []
    if result.value is not None:
        parts.append(value_text(result))
    if result.interval is not None:
        parts.append(interval_text(result.interval, result.unit))
    if result.threshold is not None:
        parts.append(f"(limit {threshold_text(result)})")
    return " ".join(parts)


def one_line(text: Any) -> str:
    """A single line: newlines and tabs become spaces, other control characters are dropped."""
    return _CONTROL.sub("", _NEWLINES.sub(" ", str(text)))


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with an ellipsis where it was cut."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def verdict_counts(results: Iterable[CheckResult]) -> dict[Verdict, int]:
    """How many results have each verdict, in :data:`VERDICT_ORDER` (zero counts included)."""
    counts = dict.fromkeys(VERDICT_ORDER, 0)
    for result in results:
        counts[result.verdict] += 1
    return counts


def counts_text(counts: dict[Verdict, int], *, skip_zero: bool = True) -> str:
    """``2 fail, 5 pass`` (worst first); ``no results`` when there are none."""
    parts = [f"{n} {v.value}" for v, n in counts.items() if n or not skip_zero]
    return ", ".join(parts) if parts else "no results"


def all_results(report: RunReport) -> list[CheckResult]:
    return [r for _, r in report.results]


def counters(report: RunReport) -> list[tuple[str, Any]]:
    """The report's known counters (those present) with human names, then any others."""
    known = dict(COUNTER_NAMES)
    shown = [(known[k], report.counters[k]) for k, _ in COUNTER_NAMES if k in report.counters]
    shown += [(str(k).replace("_", " "), v) for k, v in report.counters.items() if k not in known]
    return shown


def subject_format(subject: SubjectReport) -> str:
    return str(subject.info.get("format") or "")


# --------------------------------------------------------------------------------------------
# provenance (see qgate.provenance): short digests and versions for the reports' footers

#: hex digits of a sha256 shown in the reports (the JSON results keep all 64)
SHORT_DIGEST = 12


def short_digest(value: Any) -> str:
    """The first :data:`SHORT_DIGEST` hex digits, or ``not hashed``."""
    return str(value)[:SHORT_DIGEST] if isinstance(value, str) and value else "not hashed"


def _records(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _provenance(report: RunReport) -> dict[str, Any]:
    return report.provenance if isinstance(report.provenance, dict) else {}


def provenance_digests(report: RunReport) -> list[tuple[str, str, str, str]]:
    """``(what, name, short digest, full digest)`` for each subject, the reference, the
    policy, each dataset and each prompt set, in that order; empty without provenance."""
    prov = _provenance(report)
    rows: list[tuple[str, str, str, str]] = []

    def add(what: str, name: Any, digest: Any) -> None:
        full = str(digest) if isinstance(digest, str) else ""
        rows.append((what, one_line(name if name is not None else ""), short_digest(digest), full))

    for record in _records(prov.get("subjects")):
        add("subject", record.get("name") or record.get("path"), record.get("sha256"))
    reference = prov.get("reference")
    if isinstance(reference, dict):
        add("reference", reference.get("name") or reference.get("path"), reference.get("sha256"))
    policy = prov.get("policy")
    if isinstance(policy, dict):
        add("policy", policy.get("name"), policy.get("sha256"))
    for record in _records(prov.get("datasets")):
        add("dataset", record.get("domain") or record.get("source"), record.get("sha256"))
    for record in _records(prov.get("prompt_sets")):
        add("prompt set", record.get("source"), record.get("sha256"))
    return rows


def provenance_versions(report: RunReport) -> list[tuple[str, str]]:
    """``(name, version)``: qgate, each other plugin distribution, each installed backend
    library (those not installed are left out)."""
    prov = _provenance(report)
    if not prov:
        return []
    versions = [("qgate", str(prov.get("qgate_version") or report.qgate_version or "unknown"))]
    seen = {"qgate", DISTRIBUTION}  # qgate's own distribution is the first entry already
    for plugin in _records(prov.get("plugins")):
        dist = plugin.get("distribution")
        if isinstance(dist, str) and dist and dist not in seen:
            seen.add(dist)
            versions.append((one_line(dist), one_line(plugin.get("version") or "")))
    libraries = prov.get("libraries")
    if isinstance(libraries, dict):
        versions += [
            (one_line(name), one_line(value))
            for name, value in libraries.items()
            if value and value != "not installed"
        ]
    return versions


def machine_summary(report: RunReport) -> str:
    """``Linux x86_64 · Python 3.11.7 · AMD EPYC · 16 CPUs · 125.8 GiB · NVIDIA H100``."""
    machine = _provenance(report).get("machine")
    if not isinstance(machine, dict):
        return ""
    parts = []
    system = " ".join(str(machine[k]) for k in ("system", "machine") if machine.get(k))
    if system:
        parts.append(system)
    if machine.get("python"):
        parts.append(f"Python {machine['python']}")
    if machine.get("cpu"):
        parts.append(str(machine["cpu"]))
    if machine.get("logical_cpus"):
        parts.append(f"{machine['logical_cpus']} CPUs")
    memory = as_float(machine.get("memory_bytes"))
    if memory is not None and math.isfinite(memory) and memory > 0:
        parts.append(f"{memory / 2**30:.1f} GiB")
    gpus = machine.get("gpus")
    if isinstance(gpus, list) and gpus:
        parts.append(", ".join(str(g) for g in gpus))
    return one_line(" · ".join(parts))


# --------------------------------------------------------------------------------------------
# order: what blocks the gate first


def by_severity(results: Iterable[CheckResult]) -> list[CheckResult]:
    """Worst verdict first (error, fail, warn, pass, skip); the check order kept within each."""
    return sorted(results, key=lambda r: VERDICT_ORDER.index(r.verdict))


def subjects_worst_first(report: RunReport) -> list[SubjectReport]:
    """The subjects, those that block the gate first; the command line's order within a verdict."""
    return sorted(report.subjects, key=lambda s: VERDICT_ORDER.index(s.verdict))


def folded(subject: SubjectReport) -> bool:
    """Whether a subject's details can start folded: nothing of it blocks the gate."""
    return bool(subject.results) and not subject.verdict.is_blocking
