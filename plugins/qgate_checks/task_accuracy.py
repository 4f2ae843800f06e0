"""``task-accuracy``: exact-match accuracy per difficulty tier, subject vs reference, and flips.

Tasks come from ``tasks.py`` (seeded, four tiers). Each model answers few-shot prompts with
greedy decoding, stopping at the end of the line; the first integer or list in the answer is
compared exactly. The verdict per tier is on the accuracy drop (reference minus subject) with a
paired bootstrap interval over tasks. A tier where the reference itself is below
``min_reference_accuracy`` carries no signal: it is reported and skipped, never passed or failed.

An unchanged accuracy can hide many changed answers (wrong-to-right flips cancelling
right-to-wrong ones), so the answers are also compared item by item (:mod:`qgate_checks.flips`):
the ``right_to_wrong`` result is the share of tasks the reference answers right and the subject
wrong, over the tiers with signal, with its exact interval and McNemar test; a policy bounds it
with ``max_right_to_wrong``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qgate.backend import GenerationRequest, GenerationSettings
from qgate.check import Check, CheckContext
from qgate.errors import PolicyError
from qgate.figures import Sample, Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison, SkipCause
from qgate.stats import state_evidence
from qgate_checks.flips import Flips, flip_table
from qgate_checks.tasks import TIERS, Task, extract_answer, few_shot_prompt, make_tasks


@dataclass
class TaskAccuracyOptions:
    tasks_per_tier: int = option(20, "tasks generated per tier", minimum=2)
    seed: int = option(0, "seed of the task generator", minimum=0)
    tiers: list[str] = option(
        default_factory=lambda: list(TIERS), help=f"tiers to run: {', '.join(TIERS)}"
    )
    max_drop: dict[str, float] = option(
        default_factory=dict,
        help="tier -> largest allowed accuracy drop (0.1 = 10 points); absent tiers are reported only",
        minimum=0,
        maximum=1,
    )
    max_right_to_wrong: float | None = option(
        None,
        "largest share of tasks (tiers with signal) the reference answers right and the subject "
        "wrong (0.05 = 5 %), judged on its exact interval; unset: reported only",
        minimum=0,
        maximum=1,
    )
    min_reference_accuracy: float = option(
        0.2, "a tier where the reference scores below this carries no signal", minimum=0, maximum=1
    )
    shots: int = option(3, "solved examples before each question", minimum=0)
    max_tokens: int = option(24, "answer budget in tokens", minimum=2)


@dataclass
class Answers:
    """Both models' answers to the same tasks, and which are right."""

    tasks: list[Task]
    given: dict[str, list[str | None]]  #: role -> extracted answer per task
    right: dict[str, np.ndarray]  #: role -> bool per task

    def tier(self, tier: str) -> np.ndarray:
        return np.array([i for i, t in enumerate(self.tasks) if t.tier == tier])

    def flips(self, rows: np.ndarray) -> Flips:
        return Flips.of(self.right["reference"][rows], self.right["subject"][rows])


class TaskAccuracyCheck(Check[TaskAccuracyOptions]):
    name = "task-accuracy"
    description = (
        "exact-match accuracy per difficulty tier (one-step ... long chains) and answer flips "
        "vs the reference"
    )
    Options = TaskAccuracyOptions
    needs_reference = True

    def run(self, ctx: CheckContext[TaskAccuracyOptions]) -> list[CheckResult]:
        options = ctx.options
        unknown = sorted(set(options.tiers) - set(TIERS)) + sorted(
            set(options.max_drop) - set(TIERS)
        )
        if unknown:
            raise PolicyError(
                f"unknown tiers {unknown}; known: {', '.join(TIERS)}",
                key_path=f"checks[{ctx.spec.key}].options",
            )
        answers = _answer(ctx)
        results, rows, signal = [], [], []
        for tier in options.tiers:
            result, row = _tier_result(ctx, answers, tier)
            results.append(result)
            rows.append(row)
            if result.skip_cause is not SkipCause.NO_SIGNAL:
                signal.append(tier)
        columns = ["tier", "tasks", "reference", "subject", "drop"]
        results[0].figures.tables.append(Table("Accuracy by tier", columns, rows))
        results[0].figures.samples.extend(_lost(answers))
        results.append(_flip_result(ctx, answers, signal))
        return [state_evidence(r) for r in results]


def _answer(ctx: CheckContext[TaskAccuracyOptions]) -> Answers:
    """Generate both models' answers (greedy, one line each) and mark the right ones."""
    options = ctx.options
    assert ctx.reference is not None
    settings = GenerationSettings(max_tokens=options.max_tokens, stop=["\n"])
    tasks, prompts = [], []
    for tier in options.tiers:
        examples = make_tasks(tier, options.shots, options.seed + 10_000)
        for task in make_tasks(tier, options.tasks_per_tier, options.seed):
            tasks.append(task)
            prompts.append(GenerationRequest(few_shot_prompt(task, examples), settings))
    given, right = {}, {}
    for role, handle in (("reference", ctx.reference), ("subject", ctx.subject)):
        outputs = ctx.generate(handle, prompts, task=f"tasks with {handle.info.label}")
        given[role] = [extract_answer(o.text) for o in outputs]
        right[role] = np.array(
            [a == t.answer for a, t in zip(given[role], tasks, strict=True)], dtype=bool
        )
    return Answers(tasks, given, right)


def _tier_result(
    ctx: CheckContext[TaskAccuracyOptions], answers: Answers, tier: str
) -> tuple[CheckResult, list[object]]:
    """The tier's accuracy drop (judged, or skipped without signal) and its table row."""
    options = ctx.options
    idx = answers.tier(tier)
    sub = answers.right["subject"][idx].astype(float)
    ref = answers.right["reference"][idx].astype(float)
    drop = float(ref.mean() - sub.mean())
    interval = ctx.bootstrap(
        len(idx),
        lambda i, s=sub, r=ref: float(r[i].mean() - s[i].mean()),  # type: ignore[misc]
    )
    row = [tier, len(idx), f"{ref.mean():.0%}", f"{sub.mean():.0%}", f"{drop * 100:+.0f} pts"]
    message = f"{tier}: accuracy {sub.mean():.0%} vs reference {ref.mean():.0%} on {len(idx)} tasks"
    if ref.mean() < options.min_reference_accuracy:
        return ctx.skip(
            f"{message}; the reference scores below {options.min_reference_accuracy:.0%}, so "
            "this tier carries no signal for this model",
            f"accuracy_drop[{tier}]",
            cause=SkipCause.NO_SIGNAL,
        ), row
    flips = answers.flips(idx)
    return ctx.result(
        f"accuracy_drop[{tier}]",
        drop,
        threshold=options.max_drop.get(tier),
        comparison=Comparison.LE,
        interval=interval,
        unit="%",
        message=f"{message}; {flips.describe('tasks')}",
        details={
            "subject_accuracy": float(sub.mean()),
            "reference_accuracy": float(ref.mean()),
            "flips": flips.record(ctx.confidence),
        },
    ), row


def _flip_result(
    ctx: CheckContext[TaskAccuracyOptions], answers: Answers, signal: list[str]
) -> CheckResult:
    """Right-to-wrong flips over the tiers with signal (a no-signal skip when there are none)."""
    options = ctx.options
    by_tier = [(tier, answers.flips(answers.tier(tier))) for tier in options.tiers]
    pooled_rows = np.concatenate([answers.tier(t) for t in signal] or [np.array([], dtype=int)])
    pooled = answers.flips(pooled_rows)
    everything = answers.flips(np.arange(len(answers.tasks)))
    table_rows = [*by_tier, ("tiers with signal", pooled)] if signal else by_tier
    table = flip_table("Answer flips vs the reference", table_rows, ctx.confidence, group="tier")
    details = {
        "tiers": signal,
        "flips": (pooled if signal else everything).record(ctx.confidence),
        "by_tier": {tier: flips.record(ctx.confidence) for tier, flips in by_tier},
    }
    if not signal:
        skipped = ctx.skip(
            f"no tier carries signal (the reference scores below "
            f"{options.min_reference_accuracy:.0%} on each), so flips are reported, not judged: "
            f"{everything.describe('tasks')}",
            "right_to_wrong",
            cause=SkipCause.NO_SIGNAL,
        )
        skipped.figures.tables.append(table)
        skipped.details.update(details)
        return skipped
    share = pooled.right_to_wrong_share
    return ctx.result(
        "right_to_wrong",
        share,
        threshold=options.max_right_to_wrong,
        comparison=Comparison.LE,
        interval=pooled.interval(pooled.right_to_wrong, ctx.confidence),
        unit="%",
        message=f"right-to-wrong flips {share:.1%} of {pooled.items} tasks in "
        f"{', '.join(signal)}: {pooled.describe('tasks')}",
        details=details,
        tables=[table],
    )


def _lost(answers: Answers, count: int = 4) -> list[Sample]:
    """Tasks the reference answers right and the subject wrong, as samples."""
    tasks, given, right = answers.tasks, answers.given, answers.right
    return [
        Sample(
            prompt=tasks[i].question,
            subject=str(given["subject"][i]),
            reference=str(given["reference"][i]),
            note=f"{tasks[i].tier}: expected {tasks[i].answer}",
        )
        for i in range(len(tasks))
        if right["reference"][i] and not right["subject"][i]
    ][:count]


@hookimpl
def qgate_checks() -> list[Check]:
    return [TaskAccuracyCheck()]
