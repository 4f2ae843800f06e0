"""``repetition``: does the subject loop, degenerate or run away where the reference does not?

Log-likelihood can look fine while generation collapses (2-bit quants that loop, repeat phrases,
exhaust their budget or never close a ``<think>``). Both models generate for the same prompts
with the same decoding; each output is labelled (see ``degeneration``); the verdict is on the
subject's collapse rate minus the reference's, with a paired bootstrap interval over prompts.
A small model that loops at F16 too is therefore not blamed on its quant, and when the reference
itself collapses on most prompts the report says the signal is weak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qgate.backend import Generation, GenerationRequest, GenerationSettings
from qgate.chat import format_prompt
from qgate.check import Check, CheckContext
from qgate.figures import Sample, Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.prompts import Prompt, load_prompt_set
from qgate.results import CheckResult, Comparison
from qgate.stats import state_evidence, wilson_half_width
from qgate_checks.degeneration import COLLAPSED, LABELS, OutputStats, analyse
from qgate_checks.flips import Flips, flip_table


@dataclass
class RepetitionOptions:
    max_collapse_increase: float | None = option(
        0.05,
        "largest allowed rise of the collapse rate over the reference's (0.05 = 5 points)",
        minimum=0,
    )
    prompts: str = option("default", "a shipped prompt set's name, or a .jsonl file")
    max_tokens: int = option(96, "generation budget per output, in tokens", minimum=8)
    sampled_seeds: list[int] = option(
        default_factory=list, help="also sample at temperature 0.7 with each of these seeds"
    )
    temperature: float = option(0.7, "temperature of the sampled runs", minimum=0.01)
    weak_reference: float = option(
        0.5,
        "reference collapse rate above which the report calls the signal weak",
        minimum=0,
        maximum=1,
    )
    samples_in_report: int = option(4, "worst outputs shown side by side in the report", minimum=0)


class RepetitionCheck(Check[RepetitionOptions]):
    name = "repetition"
    description = (
        "collapse rate (loops, degenerate text, runaway budgets, unclosed <think>) vs the reference"
    )
    Options = RepetitionOptions
    needs_reference = True

    def run(self, ctx: CheckContext[RepetitionOptions]) -> list[CheckResult]:
        options = ctx.options
        assert ctx.reference is not None
        prompt_set = load_prompt_set(options.prompts)
        decodings = [GenerationSettings(max_tokens=options.max_tokens)] + [
            GenerationSettings(
                max_tokens=options.max_tokens, temperature=options.temperature, seed=s
            )
            for s in options.sampled_seeds
        ]
        runs: dict[str, list[OutputStats]] = {}
        outputs: dict[str, list[Generation]] = {}
        notes = set()
        items = [(p, d) for d in decodings for p in prompt_set.prompts]
        for role, handle in (("reference", ctx.reference), ("subject", ctx.subject)):
            requests = []
            for prompt, decoding in items:
                rendered = format_prompt(handle.info.chat_template, prompt.prompt, kind=prompt.kind)
                if rendered.note:
                    notes.add(f"{role}: {rendered.note}")
                requests.append(GenerationRequest(rendered.text, decoding))
            generated = ctx.generate(handle, requests, task=f"generating with {handle.info.label}")
            outputs[role] = generated
            runs[role] = [
                analyse(
                    g.text, g.tokens, finish_reason=g.finish_reason, prompt=p.prompt, kind=p.kind
                )
                for g, (p, _) in zip(generated, items, strict=True)
            ]
        sub = np.array([s.label in COLLAPSED for s in runs["subject"]], dtype=float)
        ref = np.array([s.label in COLLAPSED for s in runs["reference"]], dtype=float)
        increase = float(sub.mean() - ref.mean())
        interval = ctx.bootstrap(len(items), lambda idx: float(sub[idx].mean() - ref[idx].mean()))
        worst = _worst(items, runs, outputs)
        message = (
            f"collapse rate {sub.mean():.0%} vs reference {ref.mean():.0%} on {len(items)} outputs "
            f"({increase * 100:+.1f} points)"
        )
        if ref.mean() > options.weak_reference:
            message += f"; weak signal: the reference itself collapses on {ref.mean():.0%}"
        if worst:
            message += f"; worst prompt: {worst[0][0]}"
        result = ctx.result(
            "collapse_increase",
            increase,
            threshold=options.max_collapse_increase,
            comparison=Comparison.LE,
            interval=interval,
            unit="%",
            message=message,
            details={
                "subject_collapse_rate": float(sub.mean()),
                "reference_collapse_rate": float(ref.mean()),
                "prompt_set": prompt_set.name,
                "prompt_set_sha256": prompt_set.digest,
                "notes": sorted(notes),
                # healthy -> collapsed and back, output by output (quantgap's "loops vs ref")
                "flips": Flips.of(ref == 0, sub == 0).record(ctx.confidence),
            },
            tables=[
                _label_table(runs),
                flip_table(
                    "Healthy outputs flipped vs the reference",
                    [("all", Flips.of(ref == 0, sub == 0))],
                    ctx.confidence,
                ),
            ],
            samples=[sample for _, sample in worst[: options.samples_in_report]],
        )
        # a percentile bootstrap of rates that are both 0 collapses to a point; the resolution
        # of len(items) prompts at the floor is at least a Wilson half-width there
        floor = options.max_collapse_increase
        resolution = None
        if interval is not None and floor is not None:
            bootstrapped = (interval.high - interval.low) / 2
            resolution = max(bootstrapped, wilson_half_width(floor, len(items), ctx.confidence))
        return [
            state_evidence(result, sample=len(items), sample_unit="prompts", resolution=resolution)
        ]


def _label_table(runs: dict[str, list[OutputStats]]) -> Table:
    rows = []
    for role in ("reference", "subject"):
        stats = runs[role]
        counts = {label: sum(s.label == label for s in stats) for label in LABELS}
        rows.append(
            [
                role,
                *(counts[label] for label in LABELS),
                f"{np.mean([s.repeated_ngram_fraction for s in stats]):.3f}",
                f"{np.mean([s.compression_ratio for s in stats]):.3f}",
            ]
        )
    return Table("Output labels", ["model", *LABELS, "repeated 4-grams", "zlib ratio"], rows)


def _worst(
    items: list[tuple[Prompt, GenerationSettings]],
    runs: dict[str, list[OutputStats]],
    outputs: dict[str, list[Generation]],
) -> list[tuple[str, Sample]]:
    """(prompt id, sample) where the subject collapsed and the reference did not, worst loop
    first."""
    picked: list[tuple[int, str, Sample]] = []
    for i, (prompt, decoding) in enumerate(items):
        sub, ref = runs["subject"][i], runs["reference"][i]
        if sub.label not in COLLAPSED or ref.label in COLLAPSED:
            continue
        text = outputs["subject"][i].text
        span = (
            (sub.loop_start, sub.loop_start + sub.loop_period + sub.loop_chars)
            if sub.label == "looping"
            else None
        )
        severity = sub.loop_chars + 1000 * (sub.label == "degenerate")
        note = f"{prompt.id}: subject {sub.label}, reference {ref.label}"
        note += f", seed {decoding.seed}" if decoding.temperature > 0 else ", greedy"
        sample = Sample(prompt.prompt, text, outputs["reference"][i].text, note, span)
        picked.append((severity, prompt.id, sample))
    picked.sort(key=lambda item: -item[0])
    return [(prompt_id, sample) for _, prompt_id, sample in picked]


@hookimpl
def qgate_checks() -> list[Check]:
    return [RepetitionCheck()]
