"""Gathering the evidence, and saying for each kind whether it can tell the candidates apart."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qgate.check import CheckContext
from qgate_checks.identity.behaviour import BehaviourEvidence, measure_behaviour
from qgate_checks.identity.candidates import Candidate
from qgate_checks.identity.metadata import MetadataEvidence, gather_metadata
from qgate_checks.identity.options import IdentityOptions
from qgate_checks.identity.weights import (
    TensorSources,
    WeightEvidence,
    compare_weights,
    tensor_sources,
)


@dataclass
class Evidence:
    """What was gathered, and which kinds can tell the candidates apart."""

    metadata: MetadataEvidence
    weights: WeightEvidence | None = None
    weights_note: str = ""
    behaviour: BehaviourEvidence | None = None
    behaviour_note: str = ""
    decisive: dict[str, str] = field(default_factory=dict)  #: kind -> "" or why not


def gather_evidence(ctx: CheckContext[IdentityOptions], candidates: list[Candidate]) -> Evidence:
    options = ctx.options
    subject = ctx.subject
    models = [(subject.backend, subject.path, subject.info.format)]
    models += [(c.backend, c.path, c.info.format) for c in candidates]
    with tensor_sources(models) as sources:
        infos = [c.info for c in candidates]
        evidence = Evidence(gather_metadata(subject.info, infos, sources.shapes()))
        if options.weights:
            _weigh(ctx, [subject.path, *(c.path for c in candidates)], sources, evidence)
        else:
            evidence.weights_note = "turned off (weights: false)"
    evidence.decisive["weights"] = weights_decisive(evidence, candidates)
    run_behaviour = options.behaviour == "always" or (
        options.behaviour == "fallback" and evidence.decisive["weights"] != ""
    )
    if run_behaviour:
        evidence.behaviour = measure_behaviour(ctx, candidates)
    else:
        evidence.behaviour_note = (
            "turned off (behaviour: never)"
            if options.behaviour == "never"
            else "not measured: the weights decide (behaviour: fallback)"
        )
    evidence.decisive["behaviour"] = behaviour_decisive(evidence, len(candidates) > 1)
    evidence.decisive["metadata"] = metadata_decisive(evidence.metadata, candidates)
    return evidence


def _weigh(
    ctx: CheckContext[IdentityOptions],
    paths: Sequence[Path],
    sources: TensorSources,
    evidence: Evidence,
) -> None:
    """The weight evidence, or the note that says why there is none."""
    evidence.weights_note = sources.unavailable("the subject and candidates")
    if evidence.weights_note:
        return
    options = ctx.options
    started = time.perf_counter()
    tensors = compare_weights(
        sources.opened(),
        paths,
        options.max_elements_per_tensor,
        lambda done, total: ctx.update("identity: tensors", done, total),
    )
    evidence.weights = WeightEvidence(
        tensors, time.perf_counter() - started, options.min_cosine, options.shared_tolerance
    )


def weights_decisive(evidence: Evidence, candidates: Sequence[Candidate]) -> str:
    """ "" when the weights can tell the candidates apart, else why not."""
    weights = evidence.weights
    if weights is None:
        return evidence.weights_note
    if not weights.tensors:
        return "the files have no tensors"
    if not weights.matrices.any():
        return "no tensor of the files holds any values"
    for k in range(2, len(candidates) + 1):
        if weights.closer(k)[2] == 0:
            return (
                f"the claim and {candidates[k - 1].path.name} have the same weights at every "
                "sampled row"
            )
    return ""


def behaviour_decisive(evidence: Evidence, not_from: bool) -> str:
    """ "" when the behaviour can tell the candidates apart, else why not."""
    behaviour = evidence.behaviour
    if behaviour is None:
        return evidence.behaviour_note
    claim = behaviour.per_candidate[0]
    if isinstance(claim, str):
        return f"the claim cannot be compared: {claim}"
    if not_from and behaviour.ratio() is None:
        return "no not_from model can be compared: " + "; ".join(
            e for e in behaviour.per_candidate[1:] if isinstance(e, str)
        )
    return ""


def metadata_decisive(metadata: MetadataEvidence, candidates: Sequence[Candidate]) -> str:
    """ "" when the metadata can tell the candidates apart, else why not (the last not_from
    model that carries the claim's metadata, when several do)."""
    if metadata.match_share(0) is None:
        return "no metadata field can be compared"
    reason = ""
    for k in range(1, len(candidates)):
        if metadata.closer_share(k)[0] is None:
            reason = f"the claim and {candidates[k].path.name} have the same metadata"
    return reason
