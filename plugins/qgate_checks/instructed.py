"""What the output checks share: instruction prompts answered by both models through their own
chat templates, and a verdict on the share of answers that pass, subject against reference.

An output check labels each answer (``ok`` or one of its failure kinds). The judged figure is
the drop of the ok share from the reference to the subject, with a paired bootstrap interval
over prompts; the report adds each model's rates with exact intervals and the item-by-item
flips (:mod:`qgate_checks.flips`). When the reference itself passes on fewer than
``min_reference_share`` of the prompts the prompts carry no signal for this model: the rates are
reported and the result stands as a skip, never a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qgate.backend import Generation, GenerationRequest, GenerationSettings
from qgate.chat import format_prompt
from qgate.check import CheckContext
from qgate.figures import Sample, Table
from qgate.prompts import Prompt
from qgate.results import CheckResult, Comparison, SkipCause
from qgate_checks.flips import Flips, clopper_pearson, flip_table, percent

ROLES = ("reference", "subject")


@dataclass
class Answered:
    """Both models' answers to the same prompts, each labelled by the check."""

    prompts: list[Prompt]
    outputs: dict[str, list[Generation]]
    labels: dict[str, list[str]] = field(default_factory=dict)
    #: why a model's prompts were not templated (no template, or the sandbox refused it)
    notes: list[str] = field(default_factory=list)

    def ok(self, role: str) -> np.ndarray:
        return np.array([label == "ok" for label in self.labels[role]], dtype=bool)

    def label_with(self, label: Callable[[str, Prompt], str]) -> None:
        """Label every answer of both models: ``label(answer text, its prompt)``."""
        for role in ROLES:
            self.labels[role] = [
                label(output.text, prompt)
                for output, prompt in zip(self.outputs[role], self.prompts, strict=True)
            ]


def answer(
    ctx: CheckContext, prompts: Sequence[Prompt], settings: GenerationSettings, what: str
) -> Answered:
    """Generate for every prompt with both models, each through its own chat template."""
    assert ctx.reference is not None
    outputs: dict[str, list[Generation]] = {}
    notes = set()
    for role, handle in (("reference", ctx.reference), ("subject", ctx.subject)):
        requests = []
        for prompt in prompts:
            rendered = format_prompt(handle.info.chat_template, prompt.prompt, kind=prompt.kind)
            if rendered.note:
                notes.add(f"{role}: {rendered.note}")
            requests.append(GenerationRequest(rendered.text, settings))
        outputs[role] = ctx.generate(handle, requests, task=f"{what} with {handle.info.label}")
    return Answered(list(prompts), outputs, notes=sorted(notes))


def rate_table(title: str, answered: Answered, kinds: Sequence[str], confidence: float) -> Table:
    """Per model: how many answers got each label, and the ok share with its exact interval."""
    rows = []
    for role in ROLES:
        labels = answered.labels[role]
        ok = sum(label == "ok" for label in labels)
        interval = clopper_pearson(ok, len(labels), confidence)
        share = ok / len(labels) if labels else float("nan")
        rows.append(
            [role, len(labels), *(labels.count(k) for k in kinds), percent(share, interval)]
        )
    columns = ["model", "answers", *kinds, f"ok ({confidence * 100:g}% exact interval)"]
    return Table(title, columns, rows)


@dataclass
class Judgement:
    """How an output check names and bounds its figure."""

    metric: str  #: e.g. ``json_valid_drop``
    what: str  #: "valid JSON with the asked keys", for messages
    threshold: float | None
    min_reference_share: float


def judge(
    ctx: CheckContext,
    answered: Answered,
    judgement: Judgement,
    *,
    tables: list[Table],
    samples: list[Sample],
    details: dict[str, object],
    note: str = "",
) -> CheckResult:
    """The drop of the ok share from reference to subject, or a no-signal skip."""
    ref, sub = answered.ok("reference"), answered.ok("subject")
    n = len(ref)
    drop = float(ref.mean() - sub.mean())
    interval = ctx.bootstrap(n, lambda idx: float(ref[idx].mean() - sub[idx].mean()))
    flips = Flips.of(ref, sub)
    tables = [*tables, flip_table("Item flips vs the reference", [("all", flips)], ctx.confidence)]
    details = {
        **details,
        "subject_share": float(sub.mean()),
        "reference_share": float(ref.mean()),
        "subject_interval": _bounds(clopper_pearson(int(sub.sum()), n, ctx.confidence)),
        "reference_interval": _bounds(clopper_pearson(int(ref.sum()), n, ctx.confidence)),
        "flips": flips.record(ctx.confidence),
        "notes": answered.notes,
    }
    message = (
        f"{judgement.what}: {sub.mean():.0%} of {n} answers vs reference {ref.mean():.0%} "
        f"({-drop * 100:+.1f} points); {flips.describe('answers')}"
    )
    if note:
        message += f"; {note}"
    if ref.mean() < judgement.min_reference_share:
        skipped = ctx.skip(
            f"{message}; the reference itself manages under "
            f"{judgement.min_reference_share:.0%}, so these prompts carry no signal for this model",
            judgement.metric,
            cause=SkipCause.NO_SIGNAL,
        )
        skipped.details.update(details)
        skipped.figures.tables.extend(tables)
        skipped.figures.samples.extend(samples)
        return skipped
    return ctx.result(
        judgement.metric,
        drop,
        threshold=judgement.threshold,
        comparison=Comparison.LE,
        interval=interval,
        unit="%",
        message=message,
        details=details,
        tables=tables,
        samples=samples,
    )


def lost_samples(answered: Answered, count: int, note: str) -> list[Sample]:
    """Prompts where the reference's answer passed and the subject's did not."""
    ref, sub = answered.ok("reference"), answered.ok("subject")
    return [
        Sample(
            prompt=prompt.prompt,
            subject=answered.outputs["subject"][i].text,
            reference=answered.outputs["reference"][i].text,
            note=f"{prompt.id}: {note.format(label=answered.labels['subject'][i])}",
        )
        for i, prompt in enumerate(answered.prompts)
        if ref[i] and not sub[i]
    ][:count]


def _bounds(interval: object) -> list[float] | None:
    low, high = getattr(interval, "low", None), getattr(interval, "high", None)
    return None if low is None or high is None else [float(low), float(high)]
