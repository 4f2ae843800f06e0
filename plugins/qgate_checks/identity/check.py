"""The ``identity`` check: find the candidates, gather the evidence, judge it."""

from __future__ import annotations

from qgate.check import Check, CheckContext
from qgate.results import CheckResult
from qgate_checks.identity.candidates import find_candidates
from qgate_checks.identity.gathering import gather_evidence
from qgate_checks.identity.judging import judge
from qgate_checks.identity.options import IdentityOptions


class IdentityCheck(Check[IdentityOptions]):
    name = "identity"
    description = (
        "is the subject a quant of the model it claims (weights, behaviour, metadata), and of "
        "none of the not_from models?"
    )
    Options = IdentityOptions
    needs_reference = False  # the claim may be named in the options instead

    def run(self, ctx: CheckContext[IdentityOptions]) -> list[CheckResult]:
        candidates = find_candidates(ctx, ctx.options)
        if candidates is None:
            return [ctx.skip("no claimed source: give --reference or the claimed_source option")]
        return judge(ctx, candidates, gather_evidence(ctx, candidates))
