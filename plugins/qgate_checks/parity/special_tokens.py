"""``special-tokens``: BOS, EOS, EOT and PAD agree with the reference, and the subject stops.

Two results:

- ``special_token_differences``: each special token the reference names must be the subject's
  too: the same id and text where the two share a vocabulary, the same text across formats (a
  GGUF of a Hugging Face model keeps the texts, and its ids where the vocabularies align). A
  subject without the BOS or EOS the reference has differs.
- ``stop_rate_drop``: both models answer short chat prompts (:mod:`.stopping`); the share the
  reference ends itself minus the subject's, with a paired bootstrap interval over prompts. A
  subject that runs to the budget where the reference stops fails, and the result names those
  prompts and shows the answers. When the reference has no chat template or itself rarely stops
  (a base model), the check says the signal is missing instead of judging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qgate.backend import ModelInfo
from qgate.check import Check, CheckContext
from qgate.figures import Sample, Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison, SkipCause
from qgate_checks.parity.differences import Difference, listed, table
from qgate_checks.parity.stopping import STOP_PROMPTS, StopOutcome, answer_stop_prompts, stopped

#: roles a subject must have when the reference has them
REQUIRED = ("bos", "eos")


@dataclass
class SpecialTokensOptions:
    roles: list[str] = option(
        ["bos", "eos", "eot", "pad"], "special tokens compared, where the reference names them"
    )
    stopping: bool = option(True, "also answer short chat prompts and compare how often each stops")
    max_tokens: int = option(32, "token budget of each answer", minimum=8)
    max_stop_drop: float = option(
        0.1,
        "largest allowed fall of the share of answers the subject ends itself (0.1 = 10 points)",
        minimum=0,
        maximum=1,
    )
    min_reference_stop_rate: float = option(
        0.5,
        "below this share of answers the reference ends itself it gives no signal (a base model)",
        minimum=0,
        maximum=1,
    )
    samples_in_report: int = option(3, "runaway answers shown in the report", minimum=0)


class SpecialTokensCheck(Check[SpecialTokensOptions]):
    name = "special-tokens"
    description = "BOS/EOS/EOT/PAD as the reference's; the subject stops where the reference stops"
    Options = SpecialTokensOptions
    needs_reference = True

    def run(self, ctx: CheckContext[SpecialTokensOptions]) -> list[CheckResult]:
        assert ctx.reference is not None
        differences = special_differences(ctx.subject.info, ctx.reference.info, ctx.options.roles)
        if ctx.subject.info.tokenizer is None or ctx.reference.info.tokenizer is None:
            static = ctx.skip("a backend reports no special tokens: nothing to compare")
        else:
            static = ctx.result(
                "special_token_differences",
                len(differences),
                threshold=0,
                comparison=Comparison.LE,
                message=listed(differences) if differences else "the special tokens agree",
                tables=[table("Special-token differences", differences)] if differences else None,
            )
        if not ctx.options.stopping:
            return [static]
        return [static, stop_result(ctx)]


def special_differences(
    subject: ModelInfo, reference: ModelInfo, roles: list[str]
) -> list[Difference]:
    """The special tokens of ``roles`` in which the subject differs from the reference."""
    ours, theirs = subject.tokenizer, reference.tokenizer
    if ours is None or theirs is None:
        return []
    same_vocabulary = (
        ours.family == theirs.family and subject.tokenizer_hash == reference.tokenizer_hash
    )
    found = []
    for role in roles:
        want, have = theirs.special.get(role), ours.special.get(role)
        if want is None:
            continue
        what = f"{role.upper()} token"
        if have is None:
            if role in REQUIRED:
                found.append(Difference(what, None, want))
        elif same_vocabulary and have != want:
            found.append(Difference(what, have, want))
        elif None not in (have.text, want.text) and have.text != want.text:
            found.append(Difference(what, have, want, "compared by text across formats"))
    return found


def stop_result(ctx: CheckContext[SpecialTokensOptions]) -> CheckResult:
    """How much less often the subject ends its answers than the reference."""
    options = ctx.options
    assert ctx.reference is not None
    if ctx.reference.info.chat_template is None:
        return ctx.skip(
            "no signal: the reference has no chat template, so it is not a chat model and its "
            "answers rarely end on their own; nothing generated",
            "stop_rate_drop",
            cause=SkipCause.NO_SIGNAL,
        )
    outcomes, notes = answer_stop_prompts(ctx, options.max_tokens)
    sub = np.array([stopped(o.subject) for o in outcomes], dtype=float)
    ref = np.array([stopped(o.reference) for o in outcomes], dtype=float)
    count = len(outcomes)
    summary = (
        f"the subject ends {int(sub.sum())} of {count} short answers itself, the reference "
        f"{int(ref.sum())} (budget {options.max_tokens} tokens)"
    )
    if ref.mean() < options.min_reference_stop_rate:
        return ctx.skip(
            f"no signal: {summary}; a reference that rarely stops (a base model, or no chat "
            "template) cannot show a subject that stopped stopping",
            "stop_rate_drop",
            cause=SkipCause.NO_SIGNAL,
        )
    runaway = [o for o in outcomes if o.runaway]
    message = summary
    if runaway:
        message += (
            "; ran to the budget where the reference stopped: "
            + ", ".join(o.prompt_id for o in runaway)
            + " (a wrong EOS/EOT id, or a chat template without its end-of-turn token)"
        )
    if notes["subject"] != notes["reference"]:
        message += "; " + "; ".join(f"{role}: {note}" for role in notes for note in notes[role])
    return ctx.result(
        "stop_rate_drop",
        float(ref.mean() - sub.mean()),
        threshold=options.max_stop_drop,
        comparison=Comparison.LE,
        interval=ctx.bootstrap(count, lambda idx: float(ref[idx].mean() - sub[idx].mean())),
        unit="%",
        message=message,
        details={"runaway": [o.prompt_id for o in runaway], "prompts": len(STOP_PROMPTS)},
        tables=[_answers_table(outcomes)],
        samples=[_sample(o) for o in runaway[: options.samples_in_report]],
    )


def _answers_table(outcomes: list[StopOutcome]) -> Table:
    rows = [
        [
            o.prompt_id,
            f"{o.reference.finish_reason}, {len(o.reference.tokens)} tokens",
            f"{o.subject.finish_reason}, {len(o.subject.tokens)} tokens",
        ]
        for o in outcomes
    ]
    return Table("How each answer ended", ["prompt", "reference", "subject"], rows)


def _sample(outcome: StopOutcome) -> Sample:
    note = (
        f"{outcome.prompt_id}: the reference stopped after {len(outcome.reference.tokens)} "
        f"tokens, the subject ran to the budget ({len(outcome.subject.tokens)})"
    )
    return Sample(outcome.prompt, outcome.subject.text, outcome.reference.text, note)


@hookimpl
def qgate_checks() -> list[Check]:
    return [SpecialTokensCheck()]
