"""The runner: every subject loaded once, every applicable check run, every result kept.

A check that raises becomes an ``error`` result carrying its message, and the remaining checks
still run; so does a check that tries to end the process (``sys.exit`` inside a library): a check
never decides qgate's exit code. An interrupt (Ctrl-C, SIGTERM) stops the run but keeps what was
measured, marked incomplete. A subject that cannot even be opened gets one ``error`` result and
the run goes on with the next.

The gate fails closed: a fail-severity check that could not measure for a reason the user
controls (no reference, a missing extra or dataset) is an ``error`` unless the policy's
``on_skip`` says ``skip``, and a subject on which nothing at all was measured gets an ``error``.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from qgate import __version__
from qgate.backend import Backend, BackendOptions
from qgate.cache import ReferenceCache
from qgate.check import Check, CheckContext
from qgate.datasets import Dataset, load_dataset
from qgate.deadline import deadline
from qgate.detection import resolve_backend
from qgate.engine.evaluation import Evaluation
from qgate.errors import BackendError, CheckError, PolicyError, QgateError
from qgate.handle import ModelHandle
from qgate.instruments import Instruments
from qgate.plugins import Registry
from qgate.policy.conditions import matches
from qgate.policy.model import CheckSpec, DatasetSpec, Policy
from qgate.provenance import collect as collect_provenance
from qgate.results import (
    VERDICT_ORDER,
    CheckResult,
    RunReport,
    Severity,
    SkipCause,
    SubjectReport,
    Verdict,
    nothing_measured,
)
from qgate.sequential import is_clear, looks
from qgate.setup import RunRequest, RunSetup
from qgate.shard import ShardSelection

#: an error result's detail: a check found the policy asks what the run cannot honour (a limit
#: below the measurement's noise floor, an unknown tier), so the run exits 2, not 1
POLICY_ERROR = "policy_error"


class Interrupted(Exception):
    """Raised by the CLI's SIGTERM handler so the run stops like on Ctrl-C."""


class CheckTimeout(CheckError):
    """A check ran past its policy ``timeout``."""

    def __init__(self, key: str, seconds: float | None):
        super().__init__(f"the check {key!r} ran past its timeout of {seconds}s and was stopped")


class Runner:
    """Runs a policy's checks on subjects against an optional reference."""

    def __init__(
        self,
        registry: Registry,
        policy: Policy,
        *,
        reference: str | None = None,
        backend: str | None = None,
        reference_backend: str | None = None,
        extra_datasets: Sequence[DatasetSpec] = (),
        datasets: Sequence[Dataset] | None = None,
        cache: ReferenceCache | None = None,
        instruments: Instruments | None = None,
        backend_options: BackendOptions | None = None,
        shard: ShardSelection | None = None,
        run_id: str = "",
    ):
        setup = RunSetup(
            registry,
            RunRequest(backend=backend),
            policy,
            backend_options or policy.backend,
            list(datasets)
            if datasets is not None
            else [load_dataset(d) for d in [*policy.datasets, *extra_datasets]],
            cache or ReferenceCache(None),
            instruments or Instruments(),
            shard,
        )
        self._adopt(setup, reference=reference, reference_backend=reference_backend, run_id=run_id)

    @classmethod
    def from_setup(
        cls,
        setup: RunSetup,
        *,
        reference: str | None = None,
        reference_backend: str | None = None,
        run_id: str = "",
    ) -> Runner:
        """The runner of ``qgate check`` for a setup built from the command line."""
        runner = cls.__new__(cls)
        runner._adopt(
            setup, reference=reference, reference_backend=reference_backend, run_id=run_id
        )
        return runner

    def _adopt(
        self,
        setup: RunSetup,
        *,
        reference: str | None,
        reference_backend: str | None,
        run_id: str,
    ) -> None:
        self.setup = setup
        self.registry = setup.registry
        self.policy = setup.policy
        self.options = setup.options
        self.datasets = setup.datasets
        self.cache = setup.cache
        self.instruments = setup.instruments
        self.progress = setup.instruments.progress
        self.counters = setup.instruments.counters
        self.timings = setup.instruments.timings
        self.digests = setup.digests
        #: with ``--shard K/N``: only this shard's (subject, check group) units run
        self.shard = setup.shard
        self.reference_path = reference
        self.backend_name = setup.request.backend
        self.reference_backend_name = reference_backend or setup.request.backend
        self.run_id = run_id

    # -- resolution -------------------------------------------------------------------------
    def resolve_backend(self, path: Path, name: str | None) -> Backend:
        """The named backend, or the installed backend surest of ``path``
        (:func:`qgate.detection.resolve_backend`)."""
        return resolve_backend(self.registry, path, name)

    def _handle(self, path: Path, backend: Backend) -> ModelHandle:
        return self.setup.handle(path, backend)

    # -- the run ----------------------------------------------------------------------------
    def run(self, subjects: Sequence[str]) -> RunReport:
        report = RunReport(
            policy=self.policy.name,
            started_at=_now(),
            qgate_version=__version__,
            shard=self.shard.record() if self.shard is not None else None,
            run_id=self.run_id,
            invocation_id=uuid.uuid4().hex,
        )
        # Resolve every path before measuring anything: a typo should cost seconds, not an hour.
        subject_backends = [
            (Path(s), self.resolve_backend(Path(s), self.backend_name)) for s in subjects
        ]
        reference: ModelHandle | None = None
        if self.reference_path is not None:
            ref_path = Path(self.reference_path)
            reference = self._handle(
                ref_path, self.resolve_backend(ref_path, self.reference_backend_name)
            )
            report.reference = {
                "path": str(ref_path),
                "backend": reference.backend.name,
                "info": reference.info.to_dict(),
            }
        evaluation = Evaluation(
            self.datasets,
            self.policy.evaluation,
            cache=self.cache,
            instruments=self.instruments,
        )
        # the progress line's overall position: every check the policy may run on each subject
        # this shard opens (a `when:` that does not match drops its unit once the subject is read)
        self.progress.plan(sum(len(self._shard_specs(p)) for p, _ in subject_backends))
        try:
            for path, backend in subject_backends:
                if self.shard is not None and not self.shard.has_subject(str(path)):
                    continue  # another shard's subject: not even opened here
                subject_report = SubjectReport(path=str(path), backend=backend.name)
                report.subjects.append(subject_report)
                self._run_subject(subject_report, path, backend, reference, evaluation)
            report.provenance = self._provenance(report, reference)
        except (KeyboardInterrupt, Interrupted):
            report.incomplete = True
            self.progress.log("interrupted: writing what was measured, marked incomplete")
            if not report.provenance:  # stopped before or while hashing: paths, no digests
                report.provenance = self._provenance(report, reference, hash_files=False)
        finally:
            if reference is not None:
                reference.close()
            report.finished_at = _now()
            report.counters = dict(self.counters)
            report.timings = dict(self.timings)
        return report

    def _provenance(
        self, report: RunReport, reference: ModelHandle | None, *, hash_files: bool = True
    ) -> dict[str, object]:
        """What this run measured, hashed (see :mod:`qgate.provenance`)."""
        started = time.perf_counter()
        try:
            return collect_provenance(
                registry=self.registry,
                policy=self.policy,
                options=self.options,
                datasets=self.datasets,
                subjects=[Path(s.path) for s in report.subjects],
                reference=reference,
                digests=self.digests,
                progress=self.progress,
                hash_files=hash_files,
                cache=self.cache,
            )
        finally:
            self.timings["provenance"] += time.perf_counter() - started

    def _run_subject(
        self,
        subject_report: SubjectReport,
        path: Path,
        backend: Backend,
        reference: ModelHandle | None,
        evaluation: Evaluation,
    ) -> None:
        try:
            subject = self._handle(path, backend)
        except (KeyboardInterrupt, Interrupted):
            raise
        except BaseException as exc:  # one unreadable subject must not cost the others theirs
            message = str(exc) if isinstance(exc, QgateError) else _describe_crash(exc, "backend")
            subject_report.results.append(_error_result("load", "load", message))
            self.progress.log(f"{path}: {message}")
            self.progress.drop(len(self._shard_specs(path)))
            return
        subject_report.info = subject.info.to_dict()
        fields = {**subject.info.condition_fields(), "n_ctx": self.options.n_ctx}
        self.progress.log(f"checking {subject.info.label} with policy {self.policy.name!r}")
        try:
            possible = self._shard_specs(path)
            specs = [spec for spec in possible if not spec.when or matches(spec.when, fields)]
            self.progress.drop(len(possible) - len(specs))
            subject_report.planned = [spec.key for spec in specs]
            decided = self._sequential_looks(specs, subject, reference, evaluation)
            for spec in specs:
                self.progress.begin(f"{subject.info.label} · {spec.key}")
                check: Check = self.registry.checks[spec.use].item
                if spec.key in decided:
                    subject_report.results.extend(decided[spec.key])
                    continue
                if check.needs_reference and reference is None:
                    skipped = CheckResult(
                        check=spec.use,
                        check_id=spec.key,
                        metric="",
                        verdict=Verdict.SKIP,
                        message="needs a reference model (--reference)",
                        severity=Severity(spec.severity),
                        skip_cause=SkipCause.UNAVAILABLE,
                    )
                    subject_report.results.append(self._judge_skip(skipped, spec))
                    continue
                subject_report.results.extend(
                    self._run_check(check, spec, subject, reference, evaluation)
                )
            if self.shard is None:  # a shard sees part of the checks: qgate merge judges this
                unmeasured = nothing_measured(subject_report)
                if unmeasured is not None:
                    subject_report.results.append(unmeasured)
        finally:
            subject.close()

    def _shard_specs(self, path: Path) -> list[CheckSpec]:
        """The policy's checks this run may apply to ``path`` (all of them, or this shard's)."""
        return [
            spec
            for spec in self.policy.checks
            if self.shard is None or self.shard.selects(str(path), spec.key)
        ]

    def _sequential_looks(
        self,
        specs: list[CheckSpec],
        subject: ModelHandle,
        reference: ModelHandle | None,
        evaluation: Evaluation,
    ) -> dict[str, list[CheckResult]]:
        """Judge the sequential checks at each interim look (see :mod:`qgate.sequential`).

        Leaves the subject's :class:`Look` where it stopped, for every check that reads the
        shared scores, and returns the results of the look that decided them (nothing when the
        whole budget was needed: the checks then run as usual, at the last look).
        """
        plan = looks(self.policy.evaluation)
        sequential = [s for s in specs if self.registry.checks[s.use].item.sequential]
        if len(plan) == 1 or reference is None or not sequential:
            return {}
        for number, look in enumerate(plan, start=1):
            evaluation.looks[str(subject.path)] = look
            self.counters["sequential_looks"] += 1
            if look.chunks is None:
                self.progress.log(
                    f"{subject.info.label}: look {number}/{len(plan)}: the whole budget "
                    f"({look.confidence:.2%} intervals)"
                )
                return {}
            results = {
                spec.key: self._run_check(
                    self.registry.checks[spec.use].item, spec, subject, reference, evaluation
                )
                for spec in sequential
            }
            clear = all(is_clear(r) for rs in results.values() for r in rs)
            self.progress.log(
                f"{subject.info.label}: look {number}/{len(plan)}: {look.chunks} of "
                f"{self.policy.evaluation.chunks} chunks per dataset, {look.confidence:.2%} "
                f"intervals: {'every verdict clear, stopping' if clear else 'not yet clear'}"
            )
            if clear:
                record = {
                    "look": number,
                    "looks": len(plan),
                    "chunks": look.chunks,
                    "budget": self.policy.evaluation.chunks,
                    "confidence": look.confidence,
                }
                for rs in results.values():
                    for result in rs:
                        result.details["sequential"] = record
                return results
        return {}

    def _run_check(
        self,
        check: Check,
        spec: CheckSpec,
        subject: ModelHandle,
        reference: ModelHandle | None,
        evaluation: Evaluation,
    ) -> list[CheckResult]:
        ctx: CheckContext[object] = CheckContext(
            spec=spec,
            options=self.policy.check_options[spec.key],
            subject=subject,
            reference=reference,
            policy=self.policy,
            evaluation=evaluation,
            sequential=check.sequential,
        )
        started = time.perf_counter()
        try:
            with deadline(spec.timeout, lambda: CheckTimeout(spec.key, spec.timeout)):
                results = list(check.run(ctx))
        except (KeyboardInterrupt, Interrupted):
            raise
        except PolicyError as exc:  # the policy asks what the run cannot honour: exit 2
            results = [_error_result(spec.use, spec.key, str(exc), severity=spec.severity)]
            results[0].details[POLICY_ERROR] = True
        except QgateError as exc:
            results = [_error_result(spec.use, spec.key, str(exc), severity=spec.severity)]
        except MemoryError:
            results = [_error_result(spec.use, spec.key, "out of memory", severity=spec.severity)]
        except BaseException as exc:  # a plugin bug (or sys.exit) must not end the run
            result = _error_result(
                spec.use, spec.key, _describe_crash(exc, "check"), severity=spec.severity
            )
            result.details["traceback"] = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            )
            results = [result]
        if not results:
            results = [
                _error_result(
                    spec.use, spec.key, "the check returned no result", severity=spec.severity
                )
            ]
        results = [self._judge_skip(r, spec) for r in results]
        elapsed = time.perf_counter() - started
        for result in results:
            result.duration_s = elapsed / max(len(results), 1)
        self.timings[f"check:{spec.key}"] += elapsed
        worst = min(results, key=lambda r: VERDICT_ORDER.index(r.verdict))
        self.progress.log(
            f"{subject.info.label}: {spec.key} -> {worst.verdict.value} ({elapsed:.1f}s)"
        )
        return results

    def _judge_skip(self, result: CheckResult, spec: CheckSpec) -> CheckResult:
        """Apply ``on_skip`` to a skip of a fail-severity check that the user could prevent."""
        if result.verdict is not Verdict.SKIP:
            return result
        if result.skip_cause is None:  # a plugin that gave no cause: assume the strict one
            result.skip_cause = SkipCause.UNAVAILABLE
        if not result.skip_cause.user_caused or result.severity is not Severity.FAIL:
            return result
        result.on_skip = spec.on_skip or self.policy.on_skip
        if result.on_skip == "error":
            result.verdict = Verdict.ERROR
            result.message = (
                f"could not measure: {result.message} (a fail-severity check that cannot "
                "measure blocks the gate; on_skip: skip lets it pass)"
            )
        return result


def _describe_crash(exc: BaseException, who: str) -> str:
    if isinstance(exc, (SystemExit, GeneratorExit)):
        code = f"({exc.code!r})" if isinstance(exc, SystemExit) else ""
        return (
            f"the {who} tried to end the process ({type(exc).__name__}{code}); a plugin never "
            "decides qgate's exit code, so this is an error"
        )
    return f"the {who} raised {type(exc).__name__}: {exc}"


def _error_result(
    check: str, check_id: str, message: str, *, severity: str = "fail"
) -> CheckResult:
    return CheckResult(
        check=check,
        check_id=check_id,
        metric="",
        verdict=Verdict.ERROR,
        message=message,
        severity=Severity(severity),
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["BackendError", "Interrupted", "Runner"]
