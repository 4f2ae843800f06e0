"""The shared scoring pass: score the reference once (cached on disk), each subject once.

Every check that needs log-likelihoods (perplexity, KL divergence, ...) asks
:meth:`Evaluation.paired` for the same subject and gets the same arrays: one forward pass per
model per chunk, however many checks read it. ``counters['scoring_passes']`` proves it.

Scoring is incremental, chunk by chunk: a :class:`Look` can limit a subject to the first chunks
of each dataset (sequential evaluation, see :mod:`qgate.sequential`), and only those are scored,
for the subject and for the reference. A reference entry in the disk cache may hold fewer chunks
than the budget; a later run resumes it instead of starting again.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from qgate.backend import ModelInfo, TokenScores
from qgate.cache import ReferenceCache, cache_key
from qgate.datasets import Dataset, make_chunks
from qgate.errors import BackendError, CheckError
from qgate.generation import Generations
from qgate.policy.model import EvaluationSettings
from qgate.progress import Progress
from qgate.scoring.kld import kld_estimate
from qgate.session import ModelHandle


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
        self.generations = Generations(cache, counters=counters, timings=timings, progress=progress)

    def budget(self, dataset: Dataset) -> int:
        """Chunks of ``dataset`` a full pass scores (fewer when the text is shorter)."""
        return dataset.chunks or self.settings.chunks

    def look(self, subject: ModelHandle) -> Look:
        return self.looks.get(str(subject.path), Look())

    def confidence(self, subject: ModelHandle) -> float:
        """The confidence level of the intervals judged for ``subject`` at its current look."""
        return self.look(subject).confidence or self.settings.confidence

    def reference_scores(
        self, reference: ModelHandle, dataset: Dataset, chunks: int | None = None
    ) -> ReferenceScores:
        """The reference's scores on at least the first ``chunks`` chunks (None: all of them),
        from memory, the disk cache, or new passes (which resume a partial cache entry)."""
        memo_key = (str(reference.path), dataset.digest)
        n_ctx = reference.options.n_ctx
        key = cache_key(
            "reference-scores",
            model=reference.digest,
            text=dataset.digest,
            n_ctx=n_ctx,
            chunks=self.budget(dataset),
            top_k=self.settings.top_k,
            tail_samples=self.settings.tail_samples,
            kv_cache=reference.options.kv_cache,
            backend=reference.backend.name,
        )
        scores = self._reference.get(memo_key)
        if scores is None:
            cached = self.cache.load(key)
            if cached is not None and set(cached) == set(ReferenceScores.FIELDS):
                scores = ReferenceScores(dataset.domain, from_cache=True, **cached)
            else:
                model = reference.model
                tokens = make_chunks(
                    lambda text: model.tokenize(text, add_bos=True),
                    model.bos_token,
                    dataset,
                    n_ctx=n_ctx,
                    max_chunks=self.budget(dataset),
                )
                scores = ReferenceScores.unscored(dataset.domain, tokens)
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
            self.cache.store(key, scores.arrays())
        return scores

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
