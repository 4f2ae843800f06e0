"""Sequential evaluation: judge the scoring checks on the first chunks, stop once they are clear.

With ``evaluation.looks: K`` (K > 1) a subject's chunks are scored in K stages: the first
``ceil(j * chunks / K)`` chunks of every dataset at look j. After each look the sequential checks
(:attr:`qgate.check.Check.sequential`: perplexity, kl-divergence) are judged, and the subject
stops at the first look where every judged result is clear: its whole interval on one side of
the threshold. A clearly broken or clearly fine quant is then decided on a fraction of the
tokens; a borderline one is scored to the end.

Looking K times gives K chances to be fooled by noise, so every look's intervals, the last one's
included, use confidence ``1 - (1 - c) / K`` (Bonferroni) for the policy's level ``c``: the
chance that any look calls a clear verdict its true value contradicts stays within ``1 - c``.
The price is wider intervals, so a result that a fixed-budget run calls clear at ``c`` may be
inconclusive here; a result is never decided on less evidence than its level demands.
"""

from __future__ import annotations

import math

from qgate.engine.evaluation import Look
from qgate.policy.model import EvaluationSettings
from qgate.results import CheckResult, Verdict
from qgate.stats import interval_side

MIN_CHUNKS = 2  # a bootstrap over chunks needs at least two


def looks(settings: EvaluationSettings) -> list[Look]:
    """The looks of a sequential evaluation, the full budget last (one look when it is off)."""
    if settings.looks <= 1:
        return [Look()]
    confidence = 1 - (1 - settings.confidence) / settings.looks
    stages = sorted(
        {
            max(MIN_CHUNKS, math.ceil(j * settings.chunks / settings.looks))
            for j in range(1, settings.looks)
        }
        - {settings.chunks}
    )
    interim = [Look(chunks=n, confidence=confidence) for n in stages if n < settings.chunks]
    return [*interim, Look(confidence=confidence)]


def is_clear(result: CheckResult) -> bool:
    """Whether a result needs no more evidence: skipped, errored, reported only, or judged with
    an interval that lies wholly on one side of its threshold."""
    if result.verdict in (Verdict.SKIP, Verdict.ERROR) or result.threshold is None:
        return True
    if result.interval is None or result.comparison is None:
        return False  # a bare value on a few chunks is not evidence enough to stop
    return interval_side(result.interval, result.threshold, result.comparison) is not None
