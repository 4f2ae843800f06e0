"""The validated, resolved shape of a policy file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from qgate.backend import BackendOptions
from qgate.options import option

OnInconclusive = Literal["fail", "warn", "pass"]
#: what a check that could not measure for a reason the user controls (no reference, a missing
#: extra, a dataset or backend that does not fit) becomes: ``error`` blocks, ``skip`` lets it pass
OnSkip = Literal["error", "skip"]


@dataclass
class DatasetSpec:
    """Evaluation text: a built-in corpus by ``name``, or a user file by ``path``.

    Text files are split into chunks; JSONL files have one document per line in a ``text`` field.
    """

    name: str | None = option(None, "a built-in corpus (en, code, pl, ja, ru, ar, hi)")
    path: str | None = option(None, "a .txt or .jsonl file, relative to the policy file")
    domain: str | None = option(
        None, "the label results are grouped under (default: name or file stem)"
    )
    chunks: int | None = option(
        None, "chunks to score from this dataset (default: evaluation.chunks)", minimum=1
    )


@dataclass
class EvaluationSettings:
    """How the shared scoring pass reads the datasets (llama-perplexity's conventions)."""

    chunks: int = option(8, "chunks of n_ctx tokens scored per dataset", minimum=1)
    top_k: int = option(
        64, "reference top-k kept exactly per position for the KL divergence", minimum=1
    )
    tail_samples: int = option(
        128,
        "ids sampled per position from outside the top-k, for an unbiased KLD (0: a lower bound)",
        minimum=0,
    )
    bootstrap: int = option(2000, "bootstrap resamples for confidence intervals", minimum=100)
    confidence: float = option(
        0.95, "confidence level of the intervals", minimum=0.5, maximum=0.999
    )
    seed: int = option(0, "seed of the bootstrap", minimum=0)
    looks: int = option(
        1,
        "sequential evaluation: judge the scoring checks after each 1/looks of the chunks and "
        "stop once every verdict is clear (1: score the whole budget)",
        minimum=1,
        maximum=16,
    )
    cache_spot_check: int = option(
        0,
        "per cached reference entry, re-score this many randomly chosen chunks (prompts) with the "
        "real reference and require agreement (0: trust verified entries without loading it)",
        minimum=0,
    )


@dataclass
class CheckSpec:
    """One entry of a policy's ``checks:`` list."""

    use: str = option(help="the check plugin's name")
    id: str | None = option(None, "a unique id for this entry (default: the plugin name)")
    severity: Literal["fail", "warn"] = option("fail", "fail blocks the gate, warn only reports")
    on_inconclusive: OnInconclusive | None = option(
        None, "verdict when the interval straddles the threshold (default: the policy's)"
    )
    on_skip: OnSkip | None = option(
        None,
        "verdict when the check cannot measure for a reason the user controls (no reference, "
        "missing extra or data): error blocks a fail-severity check (default: the policy's)",
    )
    enabled: bool = option(True, "false removes an entry inherited through extends")
    when: dict[str, Any] = option(default_factory=dict, help="conditions on the subject's metadata")
    options: dict[str, Any] = option(default_factory=dict, help="the check's own options")
    timeout: float | None = option(
        None, "seconds before the check is stopped as an error", minimum=0
    )

    @property
    def key(self) -> str:
        return self.id or self.use


@dataclass
class PolicyDocument:
    """A policy file as written, before ``extends`` is resolved."""

    name: str | None = option(None, "the policy's name (default: the file stem)")
    description: str = option("", "what this policy is for")
    extends: str | None = option(None, "a policy this one refines: a built-in name or a path")
    on_inconclusive: OnInconclusive | None = option(
        None, "verdict when an interval straddles a threshold"
    )
    on_skip: OnSkip | None = option(
        None, "verdict of a fail-severity check that cannot measure (default: error)"
    )
    backend: dict[str, Any] = option(default_factory=dict, help="default backend options")
    evaluation: dict[str, Any] = option(default_factory=dict, help="scoring-pass settings")
    datasets: list[str | DatasetSpec] | None = option(None, "evaluation text")
    checks: list[CheckSpec] = option(default_factory=list, help="the checks to run")


@dataclass
class Policy:
    """A resolved policy: ``extends`` applied, every check's options validated."""

    name: str
    description: str
    source: str  #: the file it came from (the child's, for an extended policy)
    on_inconclusive: OnInconclusive
    on_skip: OnSkip
    backend: BackendOptions
    evaluation: EvaluationSettings
    datasets: list[DatasetSpec]
    checks: list[CheckSpec]
    #: each check's options, validated against its schema, by check key
    check_options: dict[str, Any] = field(default_factory=dict)
    #: the merged mapping the policy was built from (``qgate policy show``)
    raw: dict[str, Any] = field(default_factory=dict)
    #: every file read to build this policy, child first
    files: list[str] = field(default_factory=list)
