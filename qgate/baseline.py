"""``qgate baseline``: score the reference once and store its outputs in the reference cache.

A CI run that is split across runners (``qgate check --shard K/N``, one matrix job per quant)
would otherwise load and score the reference in every job. Run ``qgate baseline`` once, save the
cache directory (``actions/cache``), restore it in every job: their ``qgate check`` then reads the
reference's top-k distributions from the cache (``reference_cache_hits``) and never loads it.

The cache entries are the ones ``qgate check`` looks up, named by everything their content
depends on: the reference's content digest, the text's digest, chunks, top_k, tail samples, the
backend and its options (n_ctx, KV cache type, GPU layers, batch size, seed, ``extra``) and the
scoring libraries' versions. So the baseline must be run with the options the checks use
(policy, ``--n-ctx``, ``--kv-cache``, ``--gpu-layers``, ``--dataset``) and the same installed
libraries, or the checks miss the cache and score the reference again (correctly, only slower).
An existing entry is verified like any read (:mod:`qgate.cache`): one that fails is discarded,
computed again, and counted in the summary line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qgate.engine.evaluation import Evaluation
from qgate.setup import RunSetup


@dataclass
class BaselineEntry:
    """The reference's scores on one dataset, as stored in the cache."""

    domain: str
    chunks: int
    scored_tokens: int
    from_cache: bool  #: already cached before this run


@dataclass
class BaselineOutcome:
    reference: str
    label: str
    digest: str
    cache_dir: Path | None
    entries: list[BaselineEntry] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    #: why nothing was computed (no check of the policy uses the reference), or ""
    skipped: str = ""

    def lines(self) -> list[str]:
        """What ``qgate baseline`` prints."""
        if self.skipped:
            return [self.skipped]
        out = [f"reference {self.label} (sha256 {self.digest[:16]}) -> {self.cache_dir}"]
        for entry in self.entries:
            how = "already cached" if entry.from_cache else "computed and cached"
            out.append(
                f"  {entry.domain:<12} {entry.chunks} chunks, {entry.scored_tokens} scored tokens: {how}"
            )
        computed = sum(not e.from_cache for e in self.entries)
        rejected = self.counters.get("reference_cache_rejected", 0)
        out.append(
            f"{len(self.entries)} dataset{'s' if len(self.entries) != 1 else ''}: "
            f"{computed} computed, {len(self.entries) - computed} already cached"
            + (f", {rejected} cached entries discarded as untrustworthy" if rejected else "")
            + f"; model loads: {self.counters.get('model_loads', 0)}"
        )
        return out


def compute_baseline(setup: RunSetup, reference: str) -> BaselineOutcome:
    """Store ``reference``'s scores on every dataset of the setup, opened with the backend that
    ``--backend`` names (or the one that claims it)."""
    path = Path(reference)
    handle = setup.handle(path, setup.backend_for(path, setup.request.backend))
    outcome = BaselineOutcome(
        reference=str(path), label=handle.info.label, digest="", cache_dir=setup.cache.directory
    )
    checks = setup.registry.checks
    if not any(checks[spec.use].item.needs_reference for spec in setup.policy.checks):
        outcome.skipped = (
            f"policy {setup.policy.name!r} has no check that compares against the reference: "
            "nothing to cache"
        )
        return outcome
    evaluation = Evaluation(
        setup.datasets, setup.policy.evaluation, cache=setup.cache, instruments=setup.instruments
    )
    try:
        outcome.digest = handle.digest
        for dataset in setup.datasets:
            scores = evaluation.reference_scores(handle, dataset)
            outcome.entries.append(
                BaselineEntry(
                    domain=dataset.domain,
                    chunks=int(scores.tokens.shape[0]),
                    scored_tokens=int(scores.target_logprob.size),
                    from_cache=scores.from_cache,
                )
            )
    finally:
        handle.close()
        outcome.counters = dict(setup.instruments.counters)
    return outcome
