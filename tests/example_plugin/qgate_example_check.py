"""``vocab-size``: an example third-party check, a floor on the subject's vocabulary size.

It reads metadata only (no reference model, no scoring pass), exactly as a real plugin
distributed on its own would: registered through the ``qgate`` entry-point group.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison


@dataclass
class VocabSizeOptions:
    min_vocab_size: int = option(help="smallest allowed vocabulary size", minimum=1)


class VocabSizeCheck(Check[VocabSizeOptions]):
    name = "vocab-size"
    description = "the subject's vocabulary is at least min_vocab_size tokens"
    Options = VocabSizeOptions
    needs_reference = False

    def run(self, ctx: CheckContext[VocabSizeOptions]) -> list[CheckResult]:
        options = ctx.options
        vocab = ctx.subject.info.vocab_size
        return [
            ctx.result(
                "vocab_size",
                float(vocab) if vocab is not None else None,
                threshold=float(options.min_vocab_size),
                comparison=Comparison.GE,
            )
        ]


@hookimpl
def qgate_checks() -> list[Check]:
    return [VocabSizeCheck()]
