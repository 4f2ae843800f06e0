"""The check interface: what a check plugin implements, and the context it runs in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from qgate.options import NoOptions
from qgate.results import CheckResult, Comparison, Interval, Severity, SkipCause, Verdict
from qgate.stats import decide

if TYPE_CHECKING:
    from qgate.backend import Generation
    from qgate.generation import GenerationRequest
    from qgate.policy.model import CheckSpec, Policy
    from qgate.progress import Progress
    from qgate.scoring.evaluation import Evaluation, PairedScores
    from qgate.session import ModelHandle


class Check(ABC):
    """A quality check. Subclass it, set the class attributes, implement :meth:`run`."""

    #: the name a policy's ``use:`` refers to
    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: a dataclass whose fields are the check's options (see :func:`qgate.options.option`)
    Options: ClassVar[type] = NoOptions
    #: whether the check compares against a reference model (skipped when there is none)
    needs_reference: ClassVar[bool] = False
    #: whether the check's verdicts come only from :meth:`CheckContext.paired_scores` with
    #: intervals at :attr:`CheckContext.confidence`: then a policy with ``evaluation.looks > 1``
    #: may judge it on the first chunks only, stopping once every verdict is clear
    sequential: ClassVar[bool] = False

    @abstractmethod
    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Measure and judge one subject. Raise :class:`~qgate.errors.CheckError` to report an
        error result with a message; any other exception is reported with its traceback."""


@dataclass
class CheckContext:
    """What a check sees: the subject, the reference, its options, and the shared scoring."""

    spec: CheckSpec
    options: Any
    policy: Policy
    subject: ModelHandle
    reference: ModelHandle | None
    evaluation: Evaluation
    progress: Progress
    check_name: str

    def paired_scores(self) -> list[PairedScores]:
        """Subject vs reference on the policy's datasets (one shared pass per subject)."""
        assert self.reference is not None, "checks that score need needs_reference = True"
        return self.evaluation.paired(self.subject, self.reference)

    def generate(
        self, handle: ModelHandle, requests: list[GenerationRequest], task: str
    ) -> list[Generation]:
        """Generate for ``requests`` with the subject or the reference (whose outputs are cached)."""
        return self.evaluation.generations.run(
            handle, requests, task=task, cacheable=handle is self.reference
        )

    @property
    def confidence(self) -> float:
        """The confidence level of intervals over the shared scores: the policy's, raised under
        sequential evaluation so that the error rate over all looks stays within the policy's."""
        return self.evaluation.confidence(self.subject)

    @property
    def on_inconclusive(self) -> str:
        return self.spec.on_inconclusive or self.policy.on_inconclusive

    def result(
        self,
        metric: str,
        value: float | None,
        *,
        threshold: float | None = None,
        comparison: Comparison = Comparison.LE,
        interval: Interval | None = None,
        unit: str = "",
        message: str = "",
        details: dict[str, Any] | None = None,
    ) -> CheckResult:
        """A result with its verdict decided by the policy's rules (intervals, severity)."""
        severity = Severity(self.spec.severity)
        verdict, how = decide(
            value,
            threshold,
            comparison,
            interval=interval,
            on_inconclusive=self.on_inconclusive,
            severity=severity,
        )
        if not message:
            message = describe(metric, value, threshold, comparison, interval, unit)
        return CheckResult(
            check=self.check_name,
            check_id=self.spec.key,
            metric=metric,
            verdict=verdict,
            message=f"{message}: {how}",
            value=value,
            threshold=threshold,
            comparison=comparison if threshold is not None else None,
            interval=interval,
            unit=unit,
            severity=severity,
            details=details or {},
            on_inconclusive=self.on_inconclusive,
        )

    def skip(
        self, message: str, metric: str = "", *, cause: SkipCause = SkipCause.UNAVAILABLE
    ) -> CheckResult:
        """A result that measured nothing, and why.

        :param cause: the default, ``UNAVAILABLE``, is for what the user controls (a missing
            reference, extra, dataset or option): the policy's ``on_skip`` then turns the skip
            of a fail-severity check into an ``error``, because a gate that could not measure
            must not pass. ``NO_SIGNAL`` (the reference itself gives no usable signal) and
            ``NOT_APPLICABLE`` (the risk does not exist for this subject) stand as skips.
        """
        return CheckResult(
            check=self.check_name,
            check_id=self.spec.key,
            metric=metric,
            verdict=Verdict.SKIP,
            message=message,
            severity=Severity(self.spec.severity),
            skip_cause=cause,
        )


def describe(
    metric: str,
    value: float | None,
    threshold: float | None,
    comparison: Comparison,
    interval: Interval | None,
    unit: str = "",
) -> str:
    """``ppl_delta = 0.0312 [0.0250, 0.0371] (limit <= 0.01)``."""
    text = f"{metric} = {format_value(value, unit)}"
    if interval is not None:
        text += f" [{format_value(interval.low, unit)}, {format_value(interval.high, unit)}]"
    if threshold is not None:
        text += f" (limit {comparison.value} {format_value(threshold, unit)})"
    return text


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}{unit}"
    return f"{value:.4f}{unit}"
