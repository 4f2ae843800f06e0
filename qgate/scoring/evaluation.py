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
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qgate.backend import ModelInfo, TokenScores
from qgate.cache import (
    Entry,
    Field,
    ReferenceCache,
    backend_material,
    check_arrays,
    spot_check_picks,
)
from qgate.datasets import Dataset, make_chunks
from qgate.errors import BackendError, CheckError
from qgate.generation import Generations
from qgate.policy.model import EvaluationSettings
from qgate.progress import Progress
from qgate.scoring.kld import kld_estimate
from qgate.session import ModelHandle

#: how far a re-scored cached value may be from the stored one, in nats (absolute). A spot-check
#: replays the very request that produced the entry (a whole chunk, the same positions), which on
#: llama.cpp's CPU backend is bit-identical; the tolerance is for backends whose reductions are
#: not deterministic (threads, GPU atomics), a few 1e-5. Asking the same model for fewer output
#: rows already moves values by up to ~5e-4, and another model's outputs, even the Q8_0 of the
#: same weights, differ by 0.2-0.5 nats somewhere in every chunk (Gemma 3 270M): 1e-3 sits between.
SPOT_CHECK_TOLERANCE = 1e-3


@dataclass
class ReferenceScores:
    """The reference's compact outputs on one dataset: all a subject is compared against."""

    domain: str
    tokens: np.ndarray  #: int32 [chunks, n_ctx]
    target_logprob: np.ndarray  #: float64 [chunks, scored]
    top_ids: np.ndarray  #: int32 [chunks, scored, k]
    top_logprobs: np.ndarray  #: float32 [chunks, scored, k]
    tail_ids: np.ndarray  #: int32 [chunks, scored, m]: samples from outside the top-k
    tail_logprobs: np.ndarray  #: float32 [chunks, scored, m]
    from_cache: bool = False

    FIELDS = ("tokens", "target_logprob", "top_ids", "top_logprobs", "tail_ids", "tail_logprobs")

    @property
    def done(self) -> int:
        """Chunks scored so far (``tokens`` holds every chunk of the budget)."""
        return len(self.target_logprob)

    @classmethod
    def unscored(cls, domain: str, tokens: np.ndarray) -> ReferenceScores:
        empty = np.zeros((0, 0), dtype=np.float64)
        return cls(domain, tokens, empty, empty, empty, empty, empty)

    def extend(self, scored: list[TokenScores]) -> None:
        """Append the scores of the next chunks, in order."""
        new = {
            "target_logprob": np.stack([s.target_logprob for s in scored]),
            "top_ids": np.stack([s.top_ids for s in scored]),
            "top_logprobs": np.stack([s.top_logprobs for s in scored]),
            "tail_ids": np.stack([_or_empty(s.tail_ids, np.int32, len(s)) for s in scored]),
            "tail_logprobs": np.stack(
                [_or_empty(s.tail_logprobs, np.float32, len(s)) for s in scored]
            ),
        }
        first = self.done == 0  # the unscored placeholders have no shape to extend
        for name, array in new.items():
            setattr(self, name, array if first else np.concatenate([getattr(self, name), array]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def row(self, chunk: int) -> dict[str, np.ndarray]:
        """The stored values of one chunk (what a spot-check compares)."""
        return {name: getattr(self, name)[chunk] for name in self.FIELDS if name != "tokens"}

    def gather_ids(self, chunk: int) -> np.ndarray:
        """The ids a subject must report log-probabilities for: top-k, then tail samples."""
        return np.concatenate([self.top_ids[chunk], self.tail_ids[chunk]], axis=1)


@dataclass
class PairedScores:
    """Subject and reference on the same tokens of one dataset, one row per scored token."""

    domain: str
    chunk: np.ndarray  #: int [n]: the chunk each token belongs to
    ref_logprob: np.ndarray  #: float64 [n]
    sub_logprob: np.ndarray  #: float64 [n]
    kld: np.ndarray  #: float64 [n]: KL(reference || subject) per token
    ref_top1: np.ndarray  #: int [n]
    sub_top1: np.ndarray  #: int [n]

    @property
    def n_chunks(self) -> int:
        return int(self.chunk.max()) + 1 if len(self.chunk) else 0

    def per_chunk(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` within each chunk (chunks are the bootstrap's resampling unit)."""
        return np.bincount(self.chunk, weights=values) / np.bincount(self.chunk)


@dataclass(frozen=True)
class Look:
    """How much of the scoring budget one subject's checks see, and at what confidence."""

    chunks: int | None = None  #: per dataset; None: the whole budget
    confidence: float | None = None  #: of the intervals; None: the policy's


def scored_start(n_ctx: int) -> int:
    """llama-perplexity scores the second half of every chunk: logits from ``n_ctx // 2`` on."""
    return n_ctx // 2 + 1


class Evaluation:
    """Scoring passes shared by all checks of one run."""

    def __init__(
        self,
        datasets: list[Dataset],
        settings: EvaluationSettings,
        *,
        cache: ReferenceCache,
        counters: Counter[str],
        timings: defaultdict[str, float],
        progress: Progress,
    ):
        self.datasets = datasets
        self.settings = settings
        self.cache = cache
        cache.start_run(counters=counters, progress=progress)
        #: drawn afresh each run: a forger who knows the policy cannot know which chunks the
        #: spot-check re-scores (the record of each spot-check names them)
        self.spot_check_seed = secrets.randbits(63)
        self.counters = counters
        self.timings = timings
        self.progress = progress
        self._reference: dict[tuple[str, str], ReferenceScores] = {}
        self._subject: dict[tuple[str, str, str], list[TokenScores]] = {}
        self._paired: dict[tuple[str, str, int | None], list[PairedScores]] = {}
        self._compared: set[tuple[str, str]] = set()
        #: per subject path: the part of the budget its checks see (sequential evaluation)
        self.looks: dict[str, Look] = {}
        #: generations shared by the generation checks (the reference's cached on disk)
        self.generations = Generations(
            cache,
            counters=counters,
            timings=timings,
            progress=progress,
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
                self.counters["reference_cache_hits"] += 1
                self.progress.log(f"reference scores for {dataset.domain!r} from the cache")
            else:
                self.counters["reference_cache_misses"] += 1
                if scores.done:
                    self.progress.log(
                        f"reference scores for {dataset.domain!r}: resuming a cached entry "
                        f"of {scores.done} of {len(scores.tokens)} chunks"
                    )
        needed = _needed(scores, chunks)
        if scores.done < needed:
            task = f"scoring reference {reference.info.label} [{dataset.domain}]"
            scores.extend(
                [
                    self._score_chunk(reference, scores.tokens[i], task, i, needed, None)
                    for i in range(scores.done, needed)
                ]
            )
            self.cache.store(entry, scores.arrays())
        return scores

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
        if self.settings.cache_spot_check and not self._spot_check(
            reference, dataset, entry, scores
        ):
            return None
        return scores

    def _spot_check(
        self, reference: ModelHandle, dataset: Dataset, entry: Entry, scores: ReferenceScores
    ) -> bool:
        """Re-score a few cached chunks with the real reference; a disagreement discards the
        entry (reported). Loads the reference: that is the price of not trusting the cache."""
        reference.model  # noqa: B018 - loaded first: its time counts as loading, not checking
        started = time.perf_counter()
        tokens = self._tokens(reference, dataset)
        if tokens.shape != scores.tokens.shape or not np.array_equal(tokens, scores.tokens):
            self.cache.reject(
                entry, "spot-check: its token sequences are not the reference's tokenization"
            )
            return False
        picks = spot_check_picks(
            self.spot_check_seed, entry, scores.done, self.settings.cache_spot_check
        )
        worst = 0.0
        for chunk in picks:
            fresh = reference.model.score(
                tokens[chunk].tolist(),
                start=scored_start(tokens.shape[1]),
                top_k=scores.top_ids.shape[2],
                gather=scores.gather_ids(chunk),
            )
            self.counters["spot_check_passes"] += 1
            problem, diff = disagreement(scores.row(chunk), fresh, SPOT_CHECK_TOLERANCE)
            worst = max(worst, diff)
            if problem:
                self._record_spot_check(entry, dataset, picks, worst, agreed=False)
                self.cache.reject(entry, f"spot-check of chunk {chunk}: {problem}")
                self.timings["spot_check"] += time.perf_counter() - started
                return False
        self._record_spot_check(entry, dataset, picks, worst, agreed=True)
        self.progress.log(
            f"reference scores for {dataset.domain!r}: spot-check of chunks {picks} agrees "
            f"with the cache (largest difference {worst:.2g} nats)"
        )
        self.timings["spot_check"] += time.perf_counter() - started
        return True

    def _record_spot_check(
        self, entry: Entry, dataset: Dataset, picks: list[int], worst: float, *, agreed: bool
    ) -> None:
        self.cache.record_spot_check(
            entry,
            {
                "domain": dataset.domain,
                "chunks": picks,
                "seed": self.spot_check_seed,
                "max_abs_diff": worst,
                "tolerance": SPOT_CHECK_TOLERANCE,
                "agreed": agreed,
            },
        )

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
            self.counters["scoring_pass_reuses"] += 1
            return self._paired[memo_key]
        pair = (str(subject.path), str(reference.path))
        compare = pair not in self._compared
        if compare:
            check_tokenizers(subject, reference)
        results = []
        for dataset in self.datasets:
            ref = self.reference_scores(reference, dataset, look.chunks)
            if compare:
                self._check_vocabulary(subject, reference, ref, dataset)
            n = _needed(ref, look.chunks)
            parts = self._subject.setdefault((*pair, dataset.digest), [])
            task = f"scoring {subject.info.label} [{dataset.domain}]"
            for i in range(len(parts), n):
                parts.append(
                    self._score_chunk(subject, ref.tokens[i], task, i, n, ref.gather_ids(i))
                )
            started = time.perf_counter()
            results.append(
                PairedScores(
                    domain=dataset.domain,
                    chunk=np.concatenate([np.full(len(s), i) for i, s in enumerate(parts[:n])]),
                    ref_logprob=ref.target_logprob[:n].reshape(-1),
                    sub_logprob=np.concatenate([s.target_logprob for s in parts[:n]]),
                    kld=np.concatenate(
                        [_kld(ref, i, gathered(s)) for i, s in enumerate(parts[:n])]
                    ),
                    ref_top1=ref.top_ids[:n, :, 0].reshape(-1),
                    sub_top1=np.concatenate([s.top_ids[:, 0] for s in parts[:n]]),
                )
            )
            self.timings["statistics"] += time.perf_counter() - started
        self._compared.add(pair)
        self._paired[memo_key] = results
        return results

    @staticmethod
    def _check_vocabulary(
        subject: ModelHandle, reference: ModelHandle, ref: ReferenceScores, dataset: Dataset
    ) -> None:
        if tokenizer_family(subject.info) != tokenizer_family(reference.info):
            # vocabulary hashes of different formats do not compare: compare the very token
            # sequences that are scored instead (the subject tokenizes the same text)
            check_token_sequences(subject, reference, ref, dataset)
        model = subject.model
        if int(ref.top_ids.max()) >= model.n_vocab:
            raise BackendError(
                f"{subject.info.label} has {model.n_vocab} tokens but the reference uses ids up to "
                f"{int(ref.top_ids.max())}: the vocabularies differ, so the KL divergence is meaningless"
            )

    def _score_chunk(
        self,
        handle: ModelHandle,
        row: np.ndarray,
        task: str,
        index: int,
        total: int,
        gather: np.ndarray | None,
    ) -> TokenScores:
        started = time.perf_counter()
        result = handle.model.score(
            row.tolist(),
            start=scored_start(len(row)),
            # the reference keeps its top-k and draws tail samples; a subject only reports the
            # log-probabilities at those ids, plus its own top-1 for the agreement statistic
            top_k=self.settings.top_k if gather is None else 1,
            gather=gather,
            tail_samples=self.settings.tail_samples if gather is None else 0,
        )
        self.timings["score"] += time.perf_counter() - started
        self.counters["scoring_passes"] += 1
        self.counters["tokens_scored"] += len(result)
        self.progress.update(task, index + 1, total, "chunks")
        return result


def _needed(scores: ReferenceScores, chunks: int | None) -> int:
    """Chunks to score for a look at ``chunks`` (None: the whole budget)."""
    total = len(scores.tokens)
    return total if chunks is None else min(chunks, total)


def expected_top_k(top_k: int, vocab: int | None) -> int:
    """How many top ids a reference pass keeps: ``top_k``, or the whole of a smaller vocabulary."""
    return min(top_k, vocab) if vocab else top_k


def scores_problem(
    arrays: Mapping[str, np.ndarray],
    *,
    n_ctx: int,
    chunks: int,
    top_k: int,
    tail_samples: int,
    vocab: int | None = None,
) -> str | None:
    """Why cached reference scores cannot be what a pass with these settings stored (or None).

    Token ids at or above ``vocab`` (the reference's vocabulary, when its header says) would make
    every comparison an error: such an entry is discarded instead.
    """
    scored = n_ctx - scored_start(n_ctx)
    fields = {
        "tokens": Field("int", ("chunks", n_ctx), "ids"),
        "target_logprob": Field("float", ("done", scored), "logprobs"),
        "top_ids": Field("int", ("done", scored, top_k), "ids"),
        "top_logprobs": Field("float", ("done", scored, top_k), "logprobs"),
        "tail_ids": Field("int", ("done", scored, "tail"), "ids"),
        "tail_logprobs": Field("float", ("done", scored, "tail"), "logprobs"),
    }
    problem, sizes = check_arrays(arrays, fields, vocab=vocab)
    if problem:
        return problem
    if not 1 <= sizes["done"] <= sizes["chunks"] <= chunks:
        return f"it holds {sizes['done']} scored of {sizes['chunks']} chunks (budget {chunks})"
    return top_problem(arrays["top_logprobs"]) or tail_problem(sizes["tail"], tail_samples)


def top_problem(top_logprobs: np.ndarray) -> str | None:
    """A top-k is sorted, most likely first."""
    if top_logprobs.shape[-1] > 1 and np.any(np.diff(top_logprobs, axis=-1) > SPOT_CHECK_TOLERANCE):
        return "its top-k log-probabilities are not in descending order"
    return None


def tail_problem(tail: int, tail_samples: int) -> str | None:
    """A pass draws ``tail_samples`` tail ids per position, or none (a backend that cannot)."""
    if tail not in (0, tail_samples):
        return f"it holds {tail} tail samples per position, not {tail_samples}"
    return None


def disagreement(
    cached: Mapping[str, np.ndarray], fresh: TokenScores, tolerance: float
) -> tuple[str | None, float]:
    """How a fresh pass over cached positions disagrees with the cached values (None: it does
    not), and the largest absolute difference seen.

    The fresh pass keeps its own top-k and gathers log-probabilities at the cached top-k and
    tail ids. Agreement means: the same log-probability of each actual next token, the same
    sorted top-k values, the cached ids carrying those values, the cached tail values, and the
    same most likely token wherever the top two are not tied within ``tolerance``.
    """
    gathered = fresh.gathered_logprobs
    if gathered is None:
        return "the backend ignored the request for log-probabilities at given ids", np.inf
    k = cached["top_ids"].shape[-1]
    pairs = {
        "target log-probabilities": (fresh.target_logprob, cached["target_logprob"]),
        "top-k log-probabilities": (fresh.top_logprobs, cached["top_logprobs"]),
        "log-probabilities at the cached top-k ids": (gathered[:, :k], cached["top_logprobs"]),
        "log-probabilities at the cached tail ids": (gathered[:, k:], cached["tail_logprobs"]),
    }
    worst = 0.0
    for what, (new, old) in pairs.items():
        if new.shape != old.shape:
            return f"{what} have the shape {old.shape}, a fresh pass {new.shape}", np.inf
        if new.size:
            diff = float(np.max(np.abs(new.astype(np.float64) - old.astype(np.float64))))
            worst = max(worst, diff)
            if not diff <= tolerance:  # NaN disagrees too
                return f"{what} differ by up to {diff:.3g} nats (tolerance {tolerance:g})", worst
    tops = fresh.top_logprobs
    gap = tops[:, 0] - tops[:, 1] if tops.shape[1] > 1 else np.full(len(tops), np.inf)
    flipped = (fresh.top_ids[:, 0] != cached["top_ids"][:, 0]) & (gap > tolerance)
    if flipped.any():
        return (
            f"the most likely token differs at {int(flipped.sum())} of {len(flipped)} positions",
            worst,
        )
    return None, worst


def _kld(ref: ReferenceScores, chunk: int, subject_at_ref_ids: np.ndarray) -> np.ndarray:
    k = ref.top_ids.shape[2]
    return kld_estimate(
        ref.top_logprobs[chunk],
        subject_at_ref_ids[:, :k],
        ref.tail_logprobs[chunk],
        subject_at_ref_ids[:, k:],
    )


def _or_empty(array: np.ndarray | None, dtype: type, rows: int) -> np.ndarray:
    """A backend that draws no tail samples yields [rows, 0]: the KLD falls back to its bound."""
    return array if array is not None else np.zeros((rows, 0), dtype=dtype)


def gathered(scores: TokenScores) -> np.ndarray:
    """The gathered log-probabilities of a pass that was asked for them."""
    if scores.gathered_logprobs is None:
        raise CheckError("the backend ignored the request for log-probabilities at given ids")
    return scores.gathered_logprobs


def check_tokenizers(subject: ModelHandle, reference: ModelHandle) -> None:
    """Refuse to compare models whose tokenizers differ: per-token statistics would be meaningless."""
    a, b = subject.info, reference.info
    if a.vocab_size and b.vocab_size and a.vocab_size != b.vocab_size:
        raise BackendError(
            f"tokenizers differ: {a.label} has {a.vocab_size} tokens, the reference {b.label} has "
            f"{b.vocab_size}; comparing distributions across vocabularies is meaningless"
        )
    if (
        a.tokenizer_hash
        and b.tokenizer_hash
        and tokenizer_family(a) == tokenizer_family(b)
        and a.tokenizer_hash != b.tokenizer_hash
    ):
        raise BackendError(
            f"tokenizers differ: {a.label} and the reference {b.label} have different token "
            "vocabularies (tokenizer hashes differ); comparing them per token is meaningless"
        )
    if tokenizer_family(a) != tokenizer_family(b) and subject.loaded and reference.loaded:
        probe_tokenizers(subject, reference)
    if (
        not isinstance(subject.options.n_ctx, int)
        or subject.options.n_ctx != reference.options.n_ctx
    ):
        raise CheckError("subject and reference must be scored with the same context size")


#: text with Latin, Cyrillic, CJK, digits, code and odd spacing: tokenizers that differ anywhere
#: usually differ here
TOKENIZER_PROBE = (
    "The quick brown fox, 1234567 times:\n\tdef f(x): return x**2  # ok?\n"
    'Zażółć gęślą jaźń. Съешь же ещё этих булок. 日本語のテキスト。 <s></s> {"a": [1, 2]}'
)


def tokenizer_family(info: ModelInfo) -> str:
    """How a format hashes its vocabulary: hashes compare only within one family (a GGUF's
    vocabulary and a Hugging Face ``tokenizer.json`` are hashed differently)."""
    return str(info.extra.get("tokenizer_family") or info.format)


def probe_tokenizers(subject: ModelHandle, reference: ModelHandle) -> None:
    """Both loaded models must split a probe text into the same token ids."""
    a = subject.model.tokenize(TOKENIZER_PROBE, add_bos=True)
    b = reference.model.tokenize(TOKENIZER_PROBE, add_bos=True)
    if a != b:
        pairs = enumerate(zip(a, b, strict=False))
        at = next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))
        raise BackendError(
            f"tokenizers differ: {subject.info.label} and the reference {reference.info.label} "
            f"turn the same probe text into different token sequences ({len(a)} vs {len(b)} "
            f"tokens, first difference at token {at}); comparing them per token is meaningless"
        )


def check_token_sequences(
    subject: ModelHandle, reference: ModelHandle, ref: ReferenceScores, dataset: Dataset
) -> None:
    """The subject's tokenization of ``dataset`` must give the reference's chunks exactly."""
    model = subject.model
    count, n_ctx = ref.tokens.shape
    try:
        mine = make_chunks(
            lambda text: model.tokenize(text, add_bos=True),
            model.bos_token,
            dataset,
            n_ctx=n_ctx,
            max_chunks=count,
        )
    except CheckError:
        mine = np.zeros((0, n_ctx), dtype=np.int32)
    if mine.shape != ref.tokens.shape or not np.array_equal(mine, ref.tokens):
        where = ""
        if mine.shape == ref.tokens.shape:
            chunk, pos = (int(v[0]) for v in np.nonzero(mine != ref.tokens))
            where = (
                f" (first difference in chunk {chunk} at token {pos}: "
                f"{int(mine[chunk, pos])} vs {int(ref.tokens[chunk, pos])})"
            )
        raise BackendError(
            f"tokenizers differ: {subject.info.label} and the reference {reference.info.label} "
            f"tokenize the {dataset.domain!r} text into different token sequences{where}; "
            "comparing them per token is meaningless"
        )
