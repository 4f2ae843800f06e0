"""``config-parity``: the hyperparameters the subject's runtime will use are the reference's.

Configuration lost in conversion changes what a model computes without touching a weight: a
RoPE base or scaling dropped (llama.cpp issue 8330), a shorter context length, another norm
epsilon. Each backend describes its artifact as one normalised record
(:class:`~qgate.backend.ModelConfig`: GGUF keys, ``config.json`` of any transformers version),
read the way its runtime reads it, so a key that a runtime does not read shows as the value it
runs with: exllamav2 (0.3) reads ``rope_theta`` and finds none in a transformers 5 export, which
writes ``rope_parameters``, and runs with RoPE base 10000. Every difference is named, with the
runtime's reading where it explains one; which fields fail is the policy's ``fail_on``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from qgate.backend import ModelConfig
from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison
from qgate_checks.parity.differences import Difference, listed, table

#: record fields that are not hyperparameters
_NOT_COMPARED = {"runtime", "readings"}
#: every hyperparameter of the record
COMPARED = tuple(f.name for f in fields(ModelConfig) if f.name not in _NOT_COMPARED)
#: what changes the computation: a difference in any of these fails by default
COMPUTATIONAL = tuple(f for f in COMPARED if f != "tied_embeddings")


@dataclass
class ConfigParityOptions:
    fail_on: list[str] = option(
        list(COMPUTATIONAL),
        f"fields whose difference fails (the others are reported); any of {', '.join(COMPARED)}",
    )
    relative_tolerance: float = option(
        1e-5, "numbers closer than this, relatively, are equal (float32 storage)", minimum=0
    )


class ConfigParityCheck(Check[ConfigParityOptions]):
    name = "config-parity"
    description = "RoPE, context, norm epsilon, heads, sliding window... as each runtime reads them"
    Options = ConfigParityOptions
    needs_reference = True

    def run(self, ctx: CheckContext[ConfigParityOptions]) -> list[CheckResult]:
        assert ctx.reference is not None
        ours, theirs = ctx.subject.info.config, ctx.reference.info.config
        if ours is None or theirs is None:
            missing = ctx.subject.info if ours is None else ctx.reference.info
            return [
                ctx.skip(
                    f"the {missing.format} backend reports no configuration for {missing.label}: "
                    "nothing to compare",
                    "config_differences",
                )
            ]
        unknown = sorted(set(ctx.options.fail_on) - set(COMPARED))
        if unknown:
            return [ctx.skip(f"fail_on names unknown fields: {', '.join(unknown)}")]
        differences = config_differences(ours, theirs, ctx.options.relative_tolerance)
        failing = [d for d in differences if d.what in ctx.options.fail_on]
        reported = [d for d in differences if d.what not in ctx.options.fail_on]
        if failing:
            readers = " and ".join(sorted({ours.runtime or "?", theirs.runtime or "?"}))
            count = (
                "1 hyperparameter differs"
                if len(failing) == 1
                else f"{len(failing)} hyperparameters differ"
            )
            message = f"{count} from the reference's, as {readers} read them: {listed(failing)}"
        else:
            message = f"the {len(COMPARED)} hyperparameters agree where both records state them"
        if reported:
            message += f"; also differs (reported only): {listed(reported, 2)}"
        return [
            ctx.result(
                "config_differences",
                len(failing),
                threshold=0,
                comparison=Comparison.LE,
                message=message,
                tables=[table("Configuration differences", differences)] if differences else None,
                details={
                    "subject_runtime": ours.runtime,
                    "reference_runtime": theirs.runtime,
                    "differences": {d.what: [d.subject, d.reference] for d in differences},
                },
            )
        ]


def config_differences(
    subject: ModelConfig, reference: ModelConfig, tolerance: float
) -> list[Difference]:
    """Fields both records state, with different values; each with the runtimes' readings."""
    found = []
    for name in COMPARED:
        ours, theirs = getattr(subject, name), getattr(reference, name)
        if ours is None or theirs is None or _same(ours, theirs, tolerance):
            continue
        notes = [
            f"{who}: {record.readings[name]}"
            for who, record in (("subject", subject), ("reference", reference))
            if name in record.readings
        ]
        found.append(Difference(name, ours, theirs, "; ".join(notes)))
    return found


def _same(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=tolerance)
    return bool(a == b)


@hookimpl
def qgate_checks() -> list[Check]:
    return [ConfigParityCheck()]
