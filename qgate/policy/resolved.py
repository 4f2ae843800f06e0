"""A resolved policy as plain data: what ``qgate policy show`` prints and provenance hashes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from qgate.policy.model import Policy


def resolved_policy_data(policy: Policy) -> dict[str, Any]:
    """``policy`` with ``extends`` applied and every default filled in, as JSON-ready data."""
    return {
        "name": policy.name,
        "description": policy.description,
        "files": policy.files,
        "on_inconclusive": policy.on_inconclusive,
        "backend": asdict(policy.backend),
        "evaluation": asdict(policy.evaluation),
        "datasets": [asdict(d) for d in policy.datasets],
        "checks": [
            {**asdict(spec), "options": asdict(policy.check_options[spec.key])}
            for spec in policy.checks
        ],
    }
