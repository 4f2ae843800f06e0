"""The shared scoring pass: score the reference once (cached on disk), each subject once.

Every check that needs log-likelihoods (perplexity, KL divergence, ...) asks
:meth:`Evaluation.paired` for the same subject and gets the same arrays: one forward pass per
model per chunk, however many checks read it. ``counters['scoring_passes']`` proves it.

Scoring is incremental, chunk by chunk: a :class:`Look` can limit a subject to the first chunks
of each dataset (sequential evaluation, see :mod:`qgate.sequential`), and only those are scored,
for the subject and for the reference. A reference entry in the disk cache may hold fewer chunks
than the budget; a later run resumes it instead of starting again.

Cache entries are verified on every read (:mod:`qgate.cache`); with
``evaluation.cache_spot_check: N`` the reference also re-scores N randomly chosen chunks of each
entry it reads and requires agreement within :data:`SPOT_CHECK_TOLERANCE`.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qgate.backend import TokenScores
from qgate.cache import Entry, ReferenceCache, Validator, backend_material, spot_check_picks
from qgate.cached_outputs import (
    SPOT_CHECK_TOLERANCE,
    SpotCheck,
    disagreement,
    expected_top_k,
    scores_problem,
)
from qgate.datasets import Dataset, make_chunks, scored_start
from qgate.engine import noise_floor
from qgate.engine.generation import Generations
from qgate.engine.reference import ReferenceScores
from qgate.engine.tokenizers import check_tokenizers, check_vocabulary
from qgate.errors import CheckError
from qgate.handle import ModelHandle
from qgate.instruments import Instruments
from qgate.policy.model import EvaluationSettings
from qgate.scoring.kld import kld_estimate
from qgate.scoring.paired import NoiseFloor, PairedScores

#: a check's replay of cached reference outputs with the real reference
Replay = Callable[[dict[str, np.ndarray]], SpotCheck]


@dataclass(frozen=True)
class Look:
    """How much of the scoring budget one subject's checks see, and at what confidence."""

    chunks: int | None = None  #: per dataset; None: the whole budget
    confidence: float | None = None  #: of the intervals; None: the policy's


class Evaluation:
    """Scoring passes shared by all checks of one run."""

    def __init__(
        self,
        datasets: list[Dataset],
        settings: EvaluationSettings,
        *,
        cache: ReferenceCache,
        instruments: Instruments,
    ):
        self.datasets = datasets
        self.settings = settings
        self.cache = cache
        cache.start_run(instruments)
        #: drawn afresh each run: a forger who knows the policy cannot know which chunks the
        #: spot-check re-scores (the record of each spot-check names them)
        self.spot_check_seed = secrets.randbits(63)
        self.instruments = instruments
        self._reference: dict[tuple[str, str], ReferenceScores] = {}
        self._subject: dict[tuple[str, str, str], list[TokenScores]] = {}
        self._paired: dict[tuple[str, str, int | None], list[PairedScores]] = {}
        self._compared: set[tuple[str, str]] = set()
        #: per (reference, dataset): its noise floor, or why there is none
        self._floors: dict[tuple[str, str], NoiseFloor | str] = {}
        #: per subject path: the part of the budget its checks see (sequential evaluation)
        self.looks: dict[str, Look] = {}
        #: generations shared by the generation checks (the reference's cached on disk)
        self.generations = Generations(
            cache,
            instruments=instruments,
            spot_check=settings.cache_spot_check,
            spot_check_seed=self.spot_check_seed,
        )

    def budget(self, dataset: Dataset) -> int:
        """Chunks of ``dataset`` a full pass scores (fewer when the text is shorter)."""
        return dataset.chunks or self.settings.chunks

    def look(self, subject: ModelHandle) -> Look:
        return self.looks.get(str(subject.path), Look())

    def confidence(self, subject: ModelHandle) -> float:
        """The confidence level of the intervals judged for ``subject`` at its current look."""
        return self.look(subject).confidence or self.settings.confidence

    def reference_entry(self, reference: ModelHandle, dataset: Dataset) -> Entry:
        """The cache entry of the reference's scores on ``dataset``: everything they depend on."""
        return Entry.of(
            "reference-scores",
            model=reference.digest,
            text=dataset.digest,
            chunks=self.budget(dataset),
            top_k=self.settings.top_k,
            tail_samples=self.settings.tail_samples,
            **backend_material(reference.backend.name, reference.options),
        )

    def reference_scores(
        self, reference: ModelHandle, dataset: Dataset, chunks: int | None = None
    ) -> ReferenceScores:
        """The reference's scores on at least the first ``chunks`` chunks (None: all of them),
        from memory, the disk cache, or new passes (which resume a partial cache entry)."""
        memo_key = (str(reference.path), dataset.digest)
        entry = self.reference_entry(reference, dataset)
        scores = self._reference.get(memo_key)
        if scores is None:
            scores = self._cached_scores(reference, dataset, entry) or self._unscored(
                reference, dataset
            )
            self._reference[memo_key] = scores
            needed = _needed(scores, chunks)
            if scores.done >= needed:
                self.instruments.count("reference_cache_hits")
                self.instruments.log(f"reference scores for {dataset.domain!r} from the cache")
            else:
                self.instruments.count("reference_cache_misses")
                if scores.done:
                    self.instruments.log(
                        f"reference scores for {dataset.domain!r}: resuming a cached entry "
                        f"of {scores.done} of {len(scores.tokens)} chunks"
                    )
        needed = _needed(scores, chunks)
        if scores.done < needed:
            # scored live: the reference is loaded, so its noise floor costs a few passes only
            floor = not isinstance(self._cached_floor(reference, dataset), NoiseFloor)
            if floor:
                needed = max(needed, noise_floor.floor_chunks(len(scores.tokens)))
            task = f"scoring reference {reference.info.label} [{dataset.domain}]"
            scores.extend(
                [
                    self._score_chunk(reference, scores.tokens[i], task, i, needed, None)
                    for i in range(scores.done, needed)
                ]
            )
            self.cache.store(entry, scores.arrays())
            if floor:
                self._measure_floor(reference, dataset, scores)
        return scores

    def noise_floor(self, reference: ModelHandle, dataset: Dataset) -> NoiseFloor | str:
        """The reference against itself on ``dataset`` (:mod:`qgate.engine.noise_floor`), or why
        there is none: from memory or the cache, else measured when the reference is loaded
        anyway. A run that read the reference's scores from the cache never loads it for this."""
        found = self._cached_floor(reference, dataset)
        if isinstance(found, NoiseFloor) or not reference.loaded:
            return found
        chunks = noise_floor.floor_chunks(self.budget(dataset))
        scores = self.reference_scores(reference, dataset, chunks)  # may measure it on the way
        found = self._cached_floor(reference, dataset)
        return (
            found
            if isinstance(found, NoiseFloor)
            else self._measure_floor(reference, dataset, scores)
        )

    def _cached_floor(self, reference: ModelHandle, dataset: Dataset) -> NoiseFloor | str:
        key = (str(reference.path), dataset.digest)
        if key not in self._floors:
            chunks = noise_floor.floor_chunks(self.budget(dataset))
            entry = noise_floor.floor_entry(self.reference_entry(reference, dataset), chunks)
            validate = functools.partial(
                noise_floor.floor_problem, chunks=chunks, n_ctx=reference.options.n_ctx
            )
            arrays = self.cache.load(entry, validate=validate)
            self._floors[key] = (
                noise_floor.as_floor(dataset.domain, arrays)
                if arrays is not None
                else "not measured: the reference's scores came from a cache that holds no noise "
                "floor for them, and measuring one would load the reference"
            )
        return self._floors[key]

    def _measure_floor(
        self, reference: ModelHandle, dataset: Dataset, scores: ReferenceScores
    ) -> NoiseFloor | str:
        """Score the first chunks again (see :mod:`qgate.engine.noise_floor`), store and keep."""
        key = (str(reference.path), dataset.digest)
        chunks = noise_floor.floor_chunks(len(scores.tokens))
        try:
            with self.instruments.timed("noise_floor"):
                arrays = noise_floor.measure(reference.model, scores, chunks)
        except NotImplementedError as exc:  # a backend that cannot score chosen positions
            self._floors[key] = f"not measured: the backend cannot score chosen positions ({exc})"
            return self._floors[key]
        self.instruments.count("noise_floor_passes", chunks)
        entry = noise_floor.floor_entry(self.reference_entry(reference, dataset), chunks)
        self.cache.store(entry, arrays)
        self._floors[key] = noise_floor.as_floor(dataset.domain, arrays)
        return self._floors[key]

    def _unscored(self, reference: ModelHandle, dataset: Dataset) -> ReferenceScores:
        return ReferenceScores.unscored(dataset.domain, self._tokens(reference, dataset))

    def _tokens(self, reference: ModelHandle, dataset: Dataset) -> np.ndarray:
        model = reference.model
        return make_chunks(
            lambda text: model.tokenize(text, add_bos=True),
            model.bos_token,
            dataset,
            n_ctx=reference.options.n_ctx,
            max_chunks=self.budget(dataset),
        )

    def _cached_scores(
        self, reference: ModelHandle, dataset: Dataset, entry: Entry
    ) -> ReferenceScores | None:
        """The verified (and, with ``cache_spot_check``, spot-checked) cached scores, or None."""
        validate = functools.partial(
            scores_problem,
            n_ctx=reference.options.n_ctx,
            chunks=self.budget(dataset),
            top_k=expected_top_k(self.settings.top_k, reference.info.vocab_size),
            tail_samples=self.settings.tail_samples,
            vocab=reference.info.vocab_size,
        )
        arrays = self.cache.load(entry, validate=validate)
        if arrays is None:
            return None
        scores = ReferenceScores(dataset.domain, from_cache=True, **arrays)
        if self.settings.cache_spot_check and not self._spot_checked(
            reference, entry, lambda: self._replay_scores(reference, dataset, entry, scores)
        ):
            return None
        return scores

    def _replay_scores(
        self, reference: ModelHandle, dataset: Dataset, entry: Entry, scores: ReferenceScores
    ) -> SpotCheck:
        """Re-score a few cached chunks with the real reference, exactly as they were scored."""
        tokens = self._tokens(reference, dataset)
        if tokens.shape != scores.tokens.shape or not np.array_equal(tokens, scores.tokens):
            return SpotCheck("its token sequences are not the reference's tokenization")
        picks = self.spot_check_picks(entry, scores.done)
        record = {"domain": dataset.domain, "chunks": picks}
        worst = 0.0
        for chunk in picks:
            fresh = reference.model.score(
                tokens[chunk].tolist(),
                start=scored_start(tokens.shape[1]),
                top_k=scores.top_ids.shape[2],
                gather=scores.gather_ids(chunk),
            )
            self.instruments.count("spot_check_passes")
            problem, diff = disagreement(scores.row(chunk), fresh, SPOT_CHECK_TOLERANCE)
            worst = max(worst, diff)
            if problem:
                return SpotCheck(problem, {**record, "max_abs_diff": worst}, f"of chunk {chunk}")
        return SpotCheck(None, {**record, "max_abs_diff": worst})

    def _spot_checked(
        self, reference: ModelHandle, entry: Entry, replay: Callable[[], SpotCheck]
    ) -> bool:
        """Run ``replay`` (the real reference re-deriving part of a cached entry), record it, and
        discard the entry when it disagrees. The reference is loaded first, so its load time
        counts as loading, not checking: that load is the price of not trusting the cache."""
        reference.model  # noqa: B018 - loads it
        with self.instruments.timed("spot_check"):
            outcome = replay()
        self.cache.record_spot_check(
            entry,
            {
                **outcome.record,
                "seed": self.spot_check_seed,
                "tolerance": SPOT_CHECK_TOLERANCE,
                "agreed": outcome.problem is None,
            },
        )
        if outcome.problem is not None:
            where = f" {outcome.where}" if outcome.where else ""
            self.cache.reject(entry, f"spot-check{where}: {outcome.problem}")
            return False
        self.instruments.log(f"reference cache: spot-check of {entry.kind} {outcome.record} agrees")
        return True

    def spot_check_picks(self, entry: Entry, count: int) -> list[int]:
        """Which of ``count`` cached items a spot-check re-derives (random per run, recorded)."""
        return spot_check_picks(self.spot_check_seed, entry, count, self.settings.cache_spot_check)

    def derived(
        self,
        reference: ModelHandle,
        entry: Entry,
        compute: Callable[[], dict[str, np.ndarray]],
        *,
        validate: Validator,
        replay: Replay | None = None,
    ) -> dict[str, np.ndarray]:
        """Reference outputs a check derives itself (see ``CheckContext.reference_outputs``):
        verified from the cache, spot-checked when the policy asks, else computed and stored."""
        cached = self.cache.load(entry, validate=validate)
        if cached is not None and (
            not self.settings.cache_spot_check
            or replay is None
            or self._spot_checked(reference, entry, functools.partial(replay, cached))
        ):
            self.instruments.count("reference_cache_hits")
            return cached
        arrays = compute()
        self.instruments.count("reference_cache_misses")
        self.cache.store(entry, arrays)
        return arrays

    def has_paired(self, subject: ModelHandle, reference: ModelHandle) -> bool:
        """Whether :meth:`paired` already ran for this pair (so calling it again costs nothing)."""
        return (str(subject.path), str(reference.path), self.look(subject).chunks) in self._paired

    def paired(self, subject: ModelHandle, reference: ModelHandle) -> list[PairedScores]:
        """Subject vs reference on every dataset, over the subject's current :class:`Look`.

        Each chunk is scored once per model and shared by every check and every look.
        """
        look = self.look(subject)
        memo_key = (str(subject.path), str(reference.path), look.chunks)
        if memo_key in self._paired:
            self.instruments.count("scoring_pass_reuses")
            return self._paired[memo_key]
        pair = (str(subject.path), str(reference.path))
        compare = pair not in self._compared
        if compare:
            check_tokenizers(subject, reference)
        results = []
        for dataset in self.datasets:
            ref = self.reference_scores(reference, dataset, look.chunks)
            if compare:
                check_vocabulary(subject, reference, ref, dataset)
            n = _needed(ref, look.chunks)
            parts = self._subject.setdefault((*pair, dataset.digest), [])
            task = f"scoring {subject.info.label} [{dataset.domain}]"
            for i in range(len(parts), n):
                parts.append(
                    self._score_chunk(subject, ref.tokens[i], task, i, n, ref.gather_ids(i))
                )
            with self.instruments.timed("statistics"):
                results.append(_paired(dataset.domain, ref, parts[:n]))
        self._compared.add(pair)
        self._paired[memo_key] = results
        return results

    def _score_chunk(
        self,
        handle: ModelHandle,
        row: np.ndarray,
        task: str,
        index: int,
        total: int,
        gather: np.ndarray | None,
    ) -> TokenScores:
        with self.instruments.timed("score"):
            result = handle.model.score(
                row.tolist(),
                start=scored_start(len(row)),
                # the reference keeps its top-k and draws tail samples; a subject only reports
                # the log-probabilities at those ids, plus its own top-1 for the agreement
                top_k=self.settings.top_k if gather is None else 1,
                gather=gather,
                tail_samples=self.settings.tail_samples if gather is None else 0,
            )
        self.instruments.count("scoring_passes")
        self.instruments.count("tokens_scored", len(result))
        self.instruments.update(task, index + 1, total, "chunks")
        return result


def _needed(scores: ReferenceScores, chunks: int | None) -> int:
    """Chunks to score for a look at ``chunks`` (None: the whole budget)."""
    total = len(scores.tokens)
    return total if chunks is None else min(chunks, total)


def _paired(domain: str, ref: ReferenceScores, parts: list[TokenScores]) -> PairedScores:
    """The subject's first ``len(parts)`` chunks against the reference's, token by token."""
    n = len(parts)
    return PairedScores(
        domain=domain,
        position=np.concatenate([_positions(s) for s in parts]),
        tokens=ref.tokens[:n],
        chunk=np.concatenate([np.full(len(s), i) for i, s in enumerate(parts)]),
        ref_logprob=ref.target_logprob[:n].reshape(-1),
        sub_logprob=np.concatenate([s.target_logprob for s in parts]),
        kld=np.concatenate([_kld(ref, i, gathered(s)) for i, s in enumerate(parts)]),
        ref_top1=ref.top_ids[:n, :, 0].reshape(-1),
        sub_top1=np.concatenate([s.top_ids[:, 0] for s in parts]),
    )


def _positions(scores: TokenScores) -> np.ndarray:
    """Where each row of a pass sits in its sequence."""
    if scores.positions is not None:
        return np.asarray(scores.positions)
    return scores.start + np.arange(len(scores))


def _kld(ref: ReferenceScores, chunk: int, subject_at_ref_ids: np.ndarray) -> np.ndarray:
    k = ref.top_ids.shape[2]
    return kld_estimate(
        ref.top_logprobs[chunk],
        subject_at_ref_ids[:, :k],
        ref.tail_logprobs[chunk],
        subject_at_ref_ids[:, k:],
    )


def gathered(scores: TokenScores) -> np.ndarray:
    """The gathered log-probabilities of a pass that was asked for them."""
    if scores.gathered_logprobs is None:
        raise CheckError("the backend ignored the request for log-probabilities at given ids")
    return scores.gathered_logprobs
