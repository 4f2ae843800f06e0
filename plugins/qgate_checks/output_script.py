"""``output-script``: does the subject answer in the prompt's script as often as the reference?

A classic failure of low-bit quants of multilingual models: asked in Japanese or Arabic, they
answer in English (or in another script altogether). Both models answer the same instruction
prompts, written in many scripts (the shipped ``multilingual`` set: Cyrillic, Japanese, Chinese,
Hangul, Arabic, Devanagari, Greek, Hebrew, Thai, Latin), each through its own chat template. An
answer is in the wrong script when its dominant script is not the prompt's and under 30 % of its
letters are in the prompt's (a Hindi answer quoting an English term is still Hindi). The verdict
is on the rise of the wrong-script share over the reference's, with a paired interval; the
report also counts the subject's answers whose script differs from the reference's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qgate.backend import GenerationSettings
from qgate.check import Check, CheckContext
from qgate.errors import UsageError
from qgate.figures import Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.prompts import load_prompt_set
from qgate.results import CheckResult
from qgate_checks.degeneration import script_of, script_share
from qgate_checks.flips import clopper_pearson, percent
from qgate_checks.instructed import Answered, Judgement, answer, judge, lost_samples, rate_table

#: an answer's label: in the prompt's script, in another one, or too few letters to tell
KINDS = ("ok", "wrong script", "no script")
#: below this share of the prompt's script, an answer dominated by another script is wrong
SCRIPT_SHARE = 0.3


@dataclass
class OutputScriptOptions:
    prompts: str = option(
        "multilingual", "a shipped prompt set's name, or a .jsonl file of instruction prompts"
    )
    max_tokens: int = option(64, "answer budget in tokens", minimum=8)
    max_wrong_script_increase: float | None = option(
        0.05,
        "largest rise of the share of answers in another script than the prompt's, over the "
        "reference's (0.05 = 5 points)",
        minimum=0,
        maximum=1,
    )
    min_reference_share: float = option(
        0.5,
        "below this share of reference answers in the prompt's script the prompts carry no signal",
        minimum=0,
        maximum=1,
    )
    samples_in_report: int = option(4, "wrong-script answers shown in the report", minimum=0)


def label(answer: str, script: str) -> str:
    """``ok``, ``wrong script`` or ``no script`` (fewer than five letters) for one answer."""
    found = script_of(answer)
    if found is None:
        return "no script"
    if found != script and script_share(answer, script) < SCRIPT_SHARE:
        return "wrong script"
    return "ok"


class OutputScriptCheck(Check[OutputScriptOptions]):
    name = "output-script"
    description = "share of answers in another script than the prompt's, vs the reference"
    Options = OutputScriptOptions
    needs_reference = True

    def run(self, ctx: CheckContext[OutputScriptOptions]) -> list[CheckResult]:
        options = ctx.options
        prompt_set = load_prompt_set(options.prompts)
        scripts = {p.id: script_of(p.prompt) for p in prompt_set.prompts}
        unknown = sorted(pid for pid, script in scripts.items() if script is None)
        if unknown:
            raise UsageError(
                f"prompt set {prompt_set.name}: fewer than five letters in the prompts "
                f"{', '.join(unknown[:5])}, so their script cannot be told"
            )
        settings = GenerationSettings(max_tokens=options.max_tokens)
        answered = answer(ctx, prompt_set.prompts, settings, "multilingual prompts")
        answered.label_with(lambda text, prompt: label(text, str(scripts[prompt.id])))
        judgement = Judgement(
            "wrong_script_increase",
            "answers in the prompt's script",
            options.max_wrong_script_increase,
            options.min_reference_share,
        )
        differs = _differs(ctx, answered)
        return [
            judge(
                ctx,
                answered,
                judgement,
                note=f"the subject's script differs from the reference's answer on "
                f"{differs['differ']} of {differs['answers']} ({differs['shown']})",
                tables=[
                    rate_table("Answers by script", answered, KINDS, ctx.confidence),
                    _language_table(answered),
                ],
                samples=lost_samples(
                    answered, options.samples_in_report, "subject {label}, reference ok"
                ),
                details={
                    "prompt_set": prompt_set.name,
                    "prompt_set_sha256": prompt_set.digest,
                    "differs_from_reference": differs,
                },
            )
        ]


def _differs(ctx: CheckContext, answered: Answered) -> dict[str, object]:
    """How often the subject's answer is in another script than the reference's answer (where
    both have one), with an exact interval."""
    pairs = [
        (script_of(s.text), script_of(r.text))
        for s, r in zip(answered.outputs["subject"], answered.outputs["reference"], strict=True)
    ]
    told = [(s, r) for s, r in pairs if s is not None and r is not None]
    differ = sum(s != r for s, r in told)
    interval = clopper_pearson(differ, len(told), ctx.confidence)
    return {
        "answers": len(told),
        "differ": differ,
        "share": differ / len(told) if told else None,
        "interval": [interval.low, interval.high] if interval else None,
        "shown": percent(differ / len(told), interval) if told else "n/a",
    }


def _language_table(answered: Answered) -> Table:
    rows = []
    langs = sorted({p.lang for p in answered.prompts})
    for lang in langs:
        idx = np.array([i for i, p in enumerate(answered.prompts) if p.lang == lang])
        ref, sub = answered.ok("reference")[idx], answered.ok("subject")[idx]
        rows.append([lang, len(idx), int((~ref).sum()), int((~sub).sum())])
    columns = ["language", "prompts", "reference not in its script", "subject not in its script"]
    return Table("Answers not in the prompt's script, by language", columns, rows)


@hookimpl
def qgate_checks() -> list[Check]:
    return [OutputScriptCheck()]
