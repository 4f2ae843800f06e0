"""The check interface: what a check plugin implements, and the context it runs in.

A check is a class with a ``name``, an ``Options`` dataclass and a ``run(ctx)`` that returns
results. The :class:`CheckContext` is everything it may use: the subject and reference handles,
its validated options, the shared scoring pass and generations, the policy's statistics
(confidence, bootstrap, verdicts), a verified cache for reference outputs it derives itself, and
the run's counters and progress. The engine behind it (:mod:`qgate.engine`) stays private, so
the engine can change without breaking a third party's check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from qgate.figures import Chart, Figures, Sample, Table
from qgate.options import NoOptions
from qgate.results import CheckResult, Comparison, Interval, Severity, SkipCause, Verdict
from qgate.stats import bootstrap_difference, bootstrap_interval, decide

if TYPE_CHECKING:
    from qgate.backend import Generation, GenerationRequest
    from qgate.cache import Entry, Validator
    from qgate.engine.evaluation import Evaluation, Replay
    from qgate.handle import ModelHandle
    from qgate.policy.model import CheckSpec, EvaluationSettings, Policy
    from qgate.scoring.paired import NoiseFloor, PairedScores

OptionsT = TypeVar("OptionsT")


class Check(ABC, Generic[OptionsT]):
    """A quality check. Subclass it, set the class attributes, implement :meth:`run`.

    ``Check[MyOptions]`` types ``ctx.options`` as ``MyOptions`` in :meth:`run`.
    """

    #: the name a policy's ``use:`` refers to
    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: a dataclass whose fields are the check's options (see :func:`qgate.options.option`)
    Options: ClassVar[type] = NoOptions
    #: whether the check compares against a reference model (an error without one, unless the
    #: policy's ``on_skip`` says ``skip``)
    needs_reference: ClassVar[bool] = False
    #: whether the check's verdicts come only from :meth:`CheckContext.paired_scores` with
    #: intervals at :attr:`CheckContext.confidence`: then a policy with ``evaluation.looks > 1``
    #: may judge it on the first chunks only, stopping once every verdict is clear
    sequential: ClassVar[bool] = False
    #: the unit a run split across CI runners (``qgate check --shard``) keeps together. None:
    #: the checks that need the reference share one unit (they share its load, its scoring
    #: pass and its cached outputs, see :mod:`qgate.shard`), any other check is a unit alone.
    shard_group: ClassVar[str | None] = None

    @abstractmethod
    def run(self, ctx: CheckContext[OptionsT]) -> list[CheckResult]:
        """Measure and judge one subject. Raise :class:`~qgate.errors.CheckError` to report an
        error result with a message; any other exception is reported with its traceback."""


class CheckContext(Generic[OptionsT]):
    """What a check sees: the subject, the reference, its options, and the run's services."""

    def __init__(
        self,
        *,
        spec: CheckSpec,
        options: OptionsT,
        subject: ModelHandle,
        reference: ModelHandle | None,
        policy: Policy,
        evaluation: Evaluation,
        sequential: bool = False,
    ):
        self.spec = spec
        self.options = options
        self.subject = subject
        self.reference = reference
        self._policy = policy
        self._evaluation = evaluation
        self._sequential = sequential

    @property
    def check_name(self) -> str:
        return self.spec.use

    # -- measuring ------------------------------------------------------------------------------
    def paired_scores(self) -> list[PairedScores]:
        """Subject vs reference on the policy's datasets (one shared pass per subject)."""
        assert self.reference is not None, "checks that score need needs_reference = True"
        return self._evaluation.paired(self.subject, self.reference)

    def has_paired_scores(self) -> bool:
        """Whether the shared pass already ran for this subject (reading it is then free)."""
        return self.reference is not None and self._evaluation.has_paired(
            self.subject, self.reference
        )

    def noise_floor(self) -> dict[str, NoiseFloor | str]:
        """Per dataset domain: the reference against itself (``NoiseFloor``: how far two passes
        that should agree exactly land apart), or why it was not measured. It is stored with
        the reference's scores, so reading it never loads a reference the cache spared."""
        assert self.reference is not None, "the noise floor needs needs_reference = True"
        return {
            dataset.domain: self._evaluation.noise_floor(self.reference, dataset)
            for dataset in self._evaluation.datasets
        }

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of token ids (a scored token's context), by the subject's tokenizer, which
        the scoring pass checked against the reference's. Untrusted text: reporters escape it."""
        return self.subject.model.detokenize(tokens)

    def generate(
        self, handle: ModelHandle, requests: list[GenerationRequest], task: str
    ) -> list[Generation]:
        """Generate for ``requests`` with the subject or the reference (whose outputs are cached)."""
        return self._evaluation.generations.run(
            handle, requests, task=task, cacheable=handle is self.reference
        )

    def reference_outputs(
        self,
        entry: Entry,
        compute: Callable[[], dict[str, np.ndarray]],
        *,
        validate: Validator,
        replay: Replay | None = None,
    ) -> dict[str, np.ndarray]:
        """Arrays derived from the reference that the check computes itself (a long-context
        pass), from the verified reference cache when ``entry`` is there and sound, else from
        ``compute()`` (then stored). With ``evaluation.cache_spot_check``, ``replay(cached)``
        re-derives what was cached with the real reference; a disagreement discards the entry.
        """
        assert self.reference is not None, "reference outputs need needs_reference = True"
        return self._evaluation.derived(
            self.reference, entry, compute, validate=validate, replay=replay
        )

    def spot_check_picks(self, entry: Entry, count: int) -> list[int]:
        """Which of ``count`` cached items a replay asks again (random per run, recorded)."""
        return self._evaluation.spot_check_picks(entry, count)

    def kv_cache_configurations(self) -> list[tuple[str, int]]:
        """Every (KV cache type, context) this run uses: the subject's own, plus those of any
        check in the policy that runs the model at its own context (options named
        ``kv_cache``, a list, and ``context``, an integer, as ``long-context`` has)."""
        options = self.subject.options
        configs: list[tuple[str, int]] = [(options.kv_cache, options.n_ctx)]
        for spec in self._policy.checks:
            checked = self._policy.check_options.get(spec.key)
            kv_types, context = (
                getattr(checked, "kv_cache", None),
                getattr(checked, "context", None),
            )
            if isinstance(kv_types, list) and isinstance(context, int):
                configs += [(str(kv), context) for kv in kv_types]
        return configs

    # -- the policy's statistics ---------------------------------------------------------------
    @property
    def settings(self) -> EvaluationSettings:
        """The policy's evaluation settings (chunks, top-k, bootstrap, seed, ...), read only."""
        return self._policy.evaluation

    @property
    def confidence(self) -> float:
        """The confidence level of the check's intervals: the policy's; for a ``sequential``
        check judged at an interim look, raised so that the error rate over all looks stays
        within the policy's."""
        if self._sequential:
            return self._evaluation.confidence(self.subject)
        return self.settings.confidence

    @property
    def on_inconclusive(self) -> str:
        return self.spec.on_inconclusive or self._policy.on_inconclusive

    def bootstrap(self, n_units: int, statistic: Callable[[np.ndarray], float]) -> Interval | None:
        """Percentile interval of ``statistic(unit indices)`` at the policy's confidence, number
        of resamples and seed (see :func:`qgate.stats.bootstrap_interval`)."""
        return bootstrap_interval(
            n_units,
            statistic,
            resamples=self.settings.bootstrap,
            confidence=self.confidence,
            seed=self.settings.seed,
        )

    def bootstrap_difference(self, first: np.ndarray, last: np.ndarray) -> Interval | None:
        """Interval of ``mean(last) - mean(first)`` for two independent samples, at the policy's
        settings (see :func:`qgate.stats.bootstrap_difference`)."""
        return bootstrap_difference(
            first,
            last,
            resamples=self.settings.bootstrap,
            confidence=self.confidence,
            seed=self.settings.seed,
        )

    # -- results ------------------------------------------------------------------------------
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
        tables: list[Table] | None = None,
        charts: list[Chart] | None = None,
        samples: list[Sample] | None = None,
        headlines: dict[str, float] | None = None,
    ) -> CheckResult:
        """A result with its verdict decided by the policy's rules (intervals, severity).

        :param tables: charts: samples: what the report shows beside the numbers.
        :param headlines: this result's figures for run-level views, by
            :data:`qgate.figures.HEADLINES` key (``{KLD_MEAN.key: mean}``).
        """
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
            figures=Figures(tables or [], charts or [], samples or []),
            headlines=dict(headlines or {}),
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

    # -- the run's instruments ----------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        """Add to a run counter (shown in ``--profile`` and the JSON ``counters``)."""
        self._evaluation.instruments.count(name, n)

    def log(self, message: str) -> None:
        """A progress line worth keeping in the log."""
        self._evaluation.instruments.log(message)

    def update(self, task: str, done: int, total: int, detail: str = "") -> None:
        """Progress on long work inside the check (redrawn on a terminal, throttled in CI)."""
        self._evaluation.instruments.update(task, done, total, detail)


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
