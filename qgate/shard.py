"""Splitting one ``qgate check`` run across CI runners: ``qgate check --shard K/N``.

The unit of work is a (subject, group) pair. A group is the check entry's key, except that every
check comparing against the reference (``needs_reference = True``: perplexity and kl-divergence
today) is in the one group ``scoring``: those checks share one scoring pass per subject (and the
reference's outputs), so splitting them would score the subject twice. A check class may name
its own group with a ``shard_group`` class attribute.

Units are assigned to shards by a stable hash of (subject file name, group): the same inputs give
the same split on every machine, whatever the directory the models sit in, and the split of one
subject does not move when another subject is added. Every shard computes the whole plan (it needs
no model file for that: ``when`` conditions are applied when the unit runs), runs its own units,
and records both in its results, so ``qgate merge`` can prove that every planned unit ran.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qgate.backend import BackendOptions
from qgate.datasets import Dataset
from qgate.errors import UsageError
from qgate.policy.model import CheckSpec, Policy

#: the group of the checks that share the scoring pass against the reference
SCORING_GROUP = "scoring"
#: backend options that change speed, not results: shards on different runners may differ in them
SPEED_ONLY_OPTIONS = frozenset({"threads", "batch_size", "gpu_layers"})
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; anything else is a usage error that says what is expected."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise UsageError(f"expected K/N, e.g. 2/4 (shard 2 of 4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"{text!r}: K/N needs 1 <= K <= N (shards are numbered from 1)")
    return index, count


@dataclass(frozen=True)
class Unit:
    """One subject and one group of check entries, run together in one shard."""

    subject: str  #: the subject's path as given on the command line
    group: str
    checks: tuple[str, ...]  #: the check keys of the group, in policy order

    @property
    def name(self) -> str:
        """The subject's file (or folder) name: what the split hashes, so paths do not matter."""
        return Path(self.subject).name or self.subject

    @property
    def label(self) -> str:
        return f"{self.name}:{self.group}"

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "group": self.group, "checks": list(self.checks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Unit:
        return cls(str(data["subject"]), str(data["group"]), tuple(data.get("checks") or ()))


def group_of(check: Any, spec: CheckSpec) -> str:
    """The shard group of a policy entry (see the module docstring)."""
    explicit = getattr(check, "shard_group", None)
    if explicit:
        return str(explicit)
    return SCORING_GROUP if getattr(check, "needs_reference", False) else spec.key


def plan_units(subjects: Sequence[str], policy: Policy, checks: Mapping[str, Any]) -> list[Unit]:
    """Every unit of a whole run, in run order: subjects as given, groups in policy order."""
    groups: dict[str, list[str]] = {}
    for spec in policy.checks:
        groups.setdefault(group_of(checks[spec.use], spec), []).append(spec.key)
    units: list[Unit] = []
    seen: set[tuple[str, str]] = set()
    for subject in subjects:
        path = str(Path(subject))
        for group, keys in groups.items():
            if (path, group) not in seen:
                seen.add((path, group))
                units.append(Unit(path, group, tuple(keys)))
    return units


def shard_of(unit: Unit, count: int) -> int:
    """The shard (1-based) that runs ``unit`` when the run is split ``count`` ways."""
    digest = hashlib.sha256(f"{unit.name}\0{unit.group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def policy_digest(policy: Policy, options: BackendOptions, datasets: Iterable[Dataset]) -> str:
    """A digest of everything that decides a shard's results: the resolved checks and their
    options, the scoring settings, the backend options that change numbers, and the text.

    Shards whose digests differ measured different things and cannot be merged.
    """
    backend = {k: v for k, v in asdict(options).items() if k not in SPEED_ONLY_OPTIONS}
    data = {
        "policy": policy.name,
        "on_inconclusive": policy.on_inconclusive,
        "backend": backend,
        "evaluation": asdict(policy.evaluation),
        "datasets": [[d.domain, d.digest, d.chunks] for d in datasets],
        "checks": [
            {**asdict(spec), "options": _plain(policy.check_options.get(spec.key))}
            for spec in policy.checks
        ],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _plain(options: Any) -> Any:
    try:
        return asdict(options)
    except TypeError:  # not a dataclass instance
        return options


@dataclass
class ShardSelection:
    """The units one shard runs, out of the whole run's plan."""

    index: int
    count: int
    planned: list[Unit]
    digest: str = ""
    #: every check key of the policy, in order (the merge sorts results by it)
    check_order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.units = [u for u in self.planned if shard_of(u, self.count) == self.index]
        self._selected = {(u.subject, key) for u in self.units for key in u.checks}
        self._subjects = {u.subject for u in self.units}

    def has_subject(self, path: str) -> bool:
        """Whether any unit of this shard is about ``path`` (others are not even opened)."""
        return str(Path(path)) in self._subjects

    def selects(self, path: str, check_key: str) -> bool:
        """Whether this shard runs the policy entry ``check_key`` on subject ``path``."""
        return (str(Path(path)), check_key) in self._selected

    def record(self) -> dict[str, Any]:
        """What ``RunReport.shard`` holds."""
        return {
            "index": self.index,
            "count": self.count,
            "units": [u.to_dict() for u in self.units],
            "planned_units": [u.to_dict() for u in self.planned],
            "policy_digest": self.digest,
            "check_order": list(self.check_order),
        }


def select_shard(
    text: str,
    subjects: Sequence[str],
    policy: Policy,
    checks: Mapping[str, Any],
    *,
    options: BackendOptions,
    datasets: Iterable[Dataset],
) -> ShardSelection:
    """The selection for ``--shard K/N`` (``text``) of a run of ``policy`` on ``subjects``."""
    index, count = parse_shard(text)
    return ShardSelection(
        index,
        count,
        plan_units(subjects, policy, checks),
        digest=policy_digest(policy, options, datasets),
        check_order=[spec.key for spec in policy.checks],
    )
