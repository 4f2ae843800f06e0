"""Policies: the YAML files that say which checks run, with which floors, on which models."""

from qgate.policy.loader import find_policy, load_policy, load_policy_file
from qgate.policy.model import CheckSpec, DatasetSpec, EvaluationSettings, Policy

__all__ = [
    "CheckSpec",
    "DatasetSpec",
    "EvaluationSettings",
    "Policy",
    "find_policy",
    "load_policy",
    "load_policy_file",
]
