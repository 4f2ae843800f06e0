"""``identity``: is this quant really of the model it claims to be?

Many published quants are of the base model while the card claims a fine-tune (or the other way
round); the fine-tune's behaviour is then gone. This check weighs three kinds of evidence that
the subject was made from its *claimed source* (the run's reference by default, or
``claimed_source``) and from none of the ``not_from`` models (e.g. the base of a fine-tune):
the weights (:mod:`.weights`, the strongest, wherever the backend hands out tensors), the
behaviour (:mod:`.behaviour`: KL divergence on chat prompts) and the metadata (:mod:`.metadata`,
the weakest, since anyone can edit it).

The strongest evidence that can tell the candidates apart decides (:mod:`.judging`) and the
verdict says which one did; the others are reported as supporting evidence, a ``warn`` at worst.
Everything measured is in the report's tables (:mod:`.tables`).

The package, by job: :mod:`.options`, :mod:`.candidates` (the claim and the not_from models),
one module per kind of evidence, :mod:`.gathering` (what was gathered and what can decide),
:mod:`.judging`, :mod:`.tables`, :mod:`.pairwise` and :mod:`.command` (``qgate identity A B``,
the evidence between two files), :mod:`.check` (the check itself).
"""

from __future__ import annotations

import click

from qgate.check import Check
from qgate.hookspecs import hookimpl
from qgate_checks.identity.check import IdentityCheck
from qgate_checks.identity.command import identity_command
from qgate_checks.identity.options import IdentityOptions
from qgate_checks.identity.pairwise import format_pairwise, pairwise_evidence
from qgate_checks.identity.weights import WeightEvidence

__all__ = [
    "IdentityCheck",
    "IdentityOptions",
    "WeightEvidence",
    "format_pairwise",
    "identity_command",
    "pairwise_evidence",
]


@hookimpl
def qgate_checks() -> list[Check]:
    return [IdentityCheck()]


@hookimpl
def qgate_commands() -> list[click.Command]:
    return [identity_command]
