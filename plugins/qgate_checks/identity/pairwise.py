"""The identity evidence between two artifacts, loading neither model (``qgate identity A B``):
metadata side by side and, where their backend hands out tensors, every tensor of ``a`` compared
with ``b``'s at sampled rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import ModelInfo
from qgate_checks.identity.metadata import gather_metadata
from qgate_checks.identity.options import DEFAULT_MAX_ELEMENTS
from qgate_checks.identity.tables import shown
from qgate_checks.identity.weights import TensorSources, WeightEvidence, compare_weights

#: the least similar tensors listed
LEAST_SIMILAR = 5
#: share of matrices at ``min_cosine`` or more above which two files look like quants of one
CONSISTENT_SHARE = 0.8


def pairwise_evidence(
    a: ModelInfo,
    b: ModelInfo,
    sources: TensorSources,
    *,
    max_elements: int | None = DEFAULT_MAX_ELEMENTS,
    min_cosine: float = 0.9,
) -> dict[str, Any]:
    """Metadata side by side, and the weights of ``a`` compared with ``b``'s (``sources``:
    their tensors, ``a`` first) where both can be read."""
    metadata = gather_metadata(a, [b], sources.shapes())
    out: dict[str, Any] = {
        "a": a.path,
        "b": b.path,
        "metadata": [
            {
                "field": key,
                "a": metadata.subject.get(key),
                "b": metadata.candidates[0].get(key),
                "same": same,
            }
            for key, same in metadata.matches[0].items()
        ],
        "metadata_equal": metadata.match_count(0),
    }
    unavailable = sources.unavailable("the two files")
    if unavailable:
        out["weights"] = {"unavailable": unavailable}
        return out
    started = time.perf_counter()
    tensors = compare_weights(sources.opened(), [Path(a.path), Path(b.path)], max_elements)
    weights = WeightEvidence(tensors, time.perf_counter() - started, min_cosine, 0.0)
    out["weights"] = _weight_summary(weights, max_elements)
    return out


def _weight_summary(weights: WeightEvidence, max_elements: int | None) -> dict[str, Any]:
    tensors = weights.tensors
    cos, rel = weights.cos(1), weights.rel(1)
    matrices = weights.matrices if tensors else np.zeros(0, dtype=bool)
    return {
        "tensors": len(tensors),
        "matrices": int(matrices.sum()),
        "values_compared": weights.elements,
        "max_values_per_tensor": max_elements,
        "identical_tensors": int(np.sum(rel == 0)),
        "median_rel_error": float(np.median(rel[matrices])) if matrices.any() else None,
        "max_rel_error": float(np.max(rel)) if len(rel) else None,
        "median_cosine": float(np.median(cos[matrices])) if matrices.any() else None,
        "min_cosine": float(np.min(cos)) if len(cos) else None,
        "match_share": weights.match_share() if matrices.any() else None,
        "min_cosine_for_match": weights.min_cosine,
        "least_similar": [
            {
                "tensor": tensors[i].name,
                "types": list(tensors[i].types),
                "rel_error": float(rel[i]),
                "cosine": float(cos[i]),
            }
            for i in np.argsort(cos, kind="stable")[:LEAST_SIMILAR]
        ],
        "seconds": round(weights.seconds, 3),
    }


def format_pairwise(data: dict[str, Any]) -> str:
    """``pairwise_evidence`` as text for the terminal."""
    lines = [f"identity evidence: A = {data['a']}", f"                   B = {data['b']}", ""]
    lines += _metadata_lines(data)
    lines.append("")
    lines += _weight_lines(data["weights"])
    return "\n".join(lines)


def _metadata_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"metadata ({data['metadata_equal']} comparable fields equal; it can be edited):"]
    rows = data["metadata"]
    width = max((len(row["field"]) for row in rows), default=5)
    a_width = max((len(shown(row["a"])) for row in rows), default=1)
    for row in rows:
        mark = "=" if row["same"] else "?" if row["same"] is None else "≠"
        lines.append(
            f"  {mark} {row['field']:<{width}}  A: {shown(row['a']):<{a_width}}  "
            f"B: {shown(row['b'])}"
        )
    return lines


def _weight_lines(weights: dict[str, Any]) -> list[str]:
    if "unavailable" in weights:
        return [f"weights: unavailable: {weights['unavailable']}"]
    lines = [
        f"weights ({weights['tensors']} tensors, {weights['matrices']} of them matrices; "
        f"{weights['values_compared']:,} values compared, at most "
        f"{weights['max_values_per_tensor'] or 'all'} per tensor; {weights['seconds']}s):"
    ]
    share = weights["match_share"]
    if share is None:  # no tensors, or none that holds a value
        if weights["tensors"]:
            lines.append("  no tensor holds any values: there is nothing to compare")
        return lines
    lines += [
        f"  rel. error ||A-B||/||B||, matrices: median {weights['median_rel_error']:.5f} "
        f"(max over all tensors {weights['max_rel_error']:.5f})",
        f"  cosine similarity, matrices:       median {weights['median_cosine']:.5f} "
        f"(min over all tensors {weights['min_cosine']:.5f})",
        f"  identical tensors: {weights['identical_tensors']}; matrices with cosine >= "
        f"{weights['min_cosine_for_match']}: {share:.0%}",
        "  least similar:",
    ]
    lines += [
        f"    {t['tensor']} ({' / '.join(t['types'])}): rel. error {t['rel_error']:.5f}, "
        f"cosine {t['cosine']:.5f}"
        for t in weights["least_similar"]
    ]
    verdict = (
        "consistent with one being a quant of the other (to tell a fine-tune from its base, "
        "compare the quant with both: the identity check's not_from option)"
        if share >= CONSISTENT_SHARE
        else "not a quant of one another: the weights differ beyond quantization error"
    )
    return [*lines, "", f"summary: {verdict}"]
