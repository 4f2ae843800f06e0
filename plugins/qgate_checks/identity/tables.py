"""The report's tables: the evidence per candidate, the metadata side by side, the tensors least
similar to the claim, and the evidence that was not used (and why)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qgate.figures import Cell, Table
from qgate_checks.identity.candidates import Candidate
from qgate_checks.identity.gathering import Evidence
from qgate_checks.identity.weights import WeightEvidence

#: how many of the least similar tensors the report lists
LEAST_SIMILAR = 8


def evidence_tables(candidates: Sequence[Candidate], evidence: Evidence) -> list[Table]:
    """Per candidate, per metadata field, the least similar tensors, and the unused evidence."""
    tables = [_by_candidate(candidates, evidence), _metadata_side_by_side(candidates, evidence)]
    if evidence.weights is not None and evidence.weights.tensors:
        tables.append(_least_similar(evidence.weights))
    notes = [f"{kind}: {why}" for kind, why in evidence.decisive.items() if why]
    if evidence.behaviour is not None and evidence.behaviour.template_note:
        notes.append(f"behaviour prompts: {evidence.behaviour.template_note}")
    if notes:
        tables.append(Table("Evidence not used", ["note"], [[n] for n in notes]))
    return tables


def _by_candidate(candidates: Sequence[Candidate], evidence: Evidence) -> Table:
    weights, behaviour, metadata = evidence.weights, evidence.behaviour, evidence.metadata
    rows = []
    for index, cand in enumerate(candidates):
        row: list[Cell] = [cand.path.name, cand.role, metadata.match_count(index)]
        row += _weight_cells(weights, index + 1) if weights is not None else ["n/a"] * 4
        if behaviour is not None:
            mean = behaviour.mean(index)
            row.append(rounded(mean) if mean is not None else str(behaviour.per_candidate[index]))
        else:
            row.append("n/a")
        rows.append(row)
    columns = [
        "candidate",
        "role",
        "metadata fields equal",
        "tensors compared",
        "median rel. error",
        "median cosine",
        "tensors closer to the claim",
        "mean KLD (nats)",
    ]
    return Table("Identity evidence by candidate", columns, rows)


def _weight_cells(weights: WeightEvidence, k: int) -> list[Cell]:
    """Candidate ``k``'s (file ``k``'s) weight columns of the table by candidate."""
    cells: list[Cell] = [
        len(weights.tensors),
        rounded(float(np.median(weights.rel(k)[weights.matrices]))),
        rounded(float(np.median(weights.cos(k)[weights.matrices]))),
    ]
    if k == 1:
        return [*cells, "-"]
    closer, ratio, telling = weights.closer(k)
    if closer is None or ratio is None:
        return [*cells, "no tensor tells them apart"]
    return [*cells, f"{closer:.0%} of {telling} (median ratio {ratio:.3f})"]


def _metadata_side_by_side(candidates: Sequence[Candidate], evidence: Evidence) -> Table:
    metadata = evidence.metadata
    return Table(
        "Identity metadata (weak evidence: it can be edited)",
        ["field", "subject"] + [c.path.name for c in candidates],
        [
            [
                key,
                shown(metadata.subject.get(key)),
                *(shown(f.get(key)) for f in metadata.candidates),
            ]
            for key in metadata.shown_fields()
        ],
    )


def _least_similar(weights: WeightEvidence) -> Table:
    cos, rel = weights.cos(1), weights.rel(1)
    rows: list[list[Cell]] = []
    for i in np.argsort(cos, kind="stable")[:LEAST_SIMILAR]:
        tensor = weights.tensors[i]
        rows.append(
            [
                tensor.name,
                "x".join(str(d) for d in tensor.shape),
                " / ".join(tensor.types[:2]),
                tensor.elements,
                rounded(float(rel[i])),
                rounded(float(cos[i])),
            ]
        )
    columns = ["tensor", "shape", "types", "values compared", "rel. error", "cosine"]
    return Table("Tensors least similar to the claim", columns, rows)


def rounded(value: float) -> float | str:
    """Five significant digits; a non-finite value as its name."""
    if not math.isfinite(value):
        return str(value)
    return float(f"{value:.5g}")


def shown(value: str | None) -> str:
    return "-" if value is None else value
