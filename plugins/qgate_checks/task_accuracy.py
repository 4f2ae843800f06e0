"""``task-accuracy``: exact-match accuracy per difficulty tier, subject vs reference.

Tasks come from ``tasks.py`` (seeded, four tiers). Each model answers few-shot prompts with
greedy decoding, stopping at the end of the line; the first integer or list in the answer is
compared exactly. The verdict per tier is on the accuracy drop (reference minus subject) with a
paired bootstrap interval over tasks. A tier where the reference itself is below
``min_reference_accuracy`` carries no signal: it is reported and skipped, never passed or failed.
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
from qgate_checks.tasks import TIERS, extract_answer, few_shot_prompt, make_tasks


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
    min_reference_accuracy: float = option(
        0.2, "a tier where the reference scores below this carries no signal", minimum=0, maximum=1
    )
    shots: int = option(3, "solved examples before each question", minimum=0)
    max_tokens: int = option(24, "answer budget in tokens", minimum=2)


class TaskAccuracyCheck(Check[TaskAccuracyOptions]):
    name = "task-accuracy"
    description = (
        "exact-match accuracy per difficulty tier (one-step ... long chains) vs the reference"
    )
    Options = TaskAccuracyOptions
    needs_reference = True

    def run(self, ctx: CheckContext[TaskAccuracyOptions]) -> list[CheckResult]:
        options = ctx.options
        assert ctx.reference is not None
        unknown = sorted(set(options.tiers) - set(TIERS)) + sorted(
            set(options.max_drop) - set(TIERS)
        )
        if unknown:
            raise PolicyError(
                f"unknown tiers {unknown}; known: {', '.join(TIERS)}",
                key_path=f"checks[{ctx.spec.key}].options",
            )
        settings = GenerationSettings(max_tokens=options.max_tokens, stop=["\n"])
        tasks, prompts = [], []
        for tier in options.tiers:
            examples = make_tasks(tier, options.shots, options.seed + 10_000)
            for task in make_tasks(tier, options.tasks_per_tier, options.seed):
                tasks.append(task)
                prompts.append(GenerationRequest(few_shot_prompt(task, examples), settings))
        correct = {}
        answers = {}
        for role, handle in (("reference", ctx.reference), ("subject", ctx.subject)):
            outputs = ctx.generate(handle, prompts, task=f"tasks with {handle.info.label}")
            answers[role] = [extract_answer(o.text) for o in outputs]
            correct[role] = np.array(
                [a == t.answer for a, t in zip(answers[role], tasks, strict=True)], dtype=float
            )
        results, rows = [], []
        for tier in options.tiers:
            idx = np.array([i for i, t in enumerate(tasks) if t.tier == tier])
            sub, ref = correct["subject"][idx], correct["reference"][idx]
            drop = float(ref.mean() - sub.mean())
            interval = ctx.bootstrap(
                len(idx),
                lambda i, s=sub, r=ref: float(r[i].mean() - s[i].mean()),  # type: ignore[misc]
            )
            rows.append(
                [tier, len(idx), f"{ref.mean():.0%}", f"{sub.mean():.0%}", f"{drop * 100:+.0f} pts"]
            )
            message = f"{tier}: accuracy {sub.mean():.0%} vs reference {ref.mean():.0%} on {len(idx)} tasks"
            if ref.mean() < options.min_reference_accuracy:
                results.append(
                    ctx.skip(
                        f"{message}; the reference scores below {options.min_reference_accuracy:.0%}, so this tier "
                        "carries no signal for this model",
                        f"accuracy_drop[{tier}]",
                        cause=SkipCause.NO_SIGNAL,
                    )
                )
                continue
            results.append(
                ctx.result(
                    f"accuracy_drop[{tier}]",
                    drop,
                    threshold=options.max_drop.get(tier),
                    comparison=Comparison.LE,
                    interval=interval,
                    unit="%",
                    message=message,
                    details={
                        "subject_accuracy": float(sub.mean()),
                        "reference_accuracy": float(ref.mean()),
                    },
                )
            )
        missed = [
            Sample(
                prompt=tasks[i].question,
                subject=str(answers["subject"][i]),
                reference=str(answers["reference"][i]),
                note=f"{tasks[i].tier}: expected {tasks[i].answer}",
            )
            for i in range(len(tasks))
            if correct["reference"][i] and not correct["subject"][i]
        ][:4]
        columns = ["tier", "tasks", "reference", "subject", "drop"]
        results[0].figures.tables.append(Table("Accuracy by tier", columns, rows))
        results[0].figures.samples.extend(missed)
        return results


@hookimpl
def qgate_checks() -> list[Check]:
    return [TaskAccuracyCheck()]
