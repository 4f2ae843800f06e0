"""The runtime floor: the reference's own full-precision weights, run by the subject's runtime,
against the reference.

When a quant and its reference run in different runtimes (an EXL2 quant in exllamav2 against a
Hugging Face reference in transformers), its measured damage is the quantization's plus the
runtimes' disagreement. Running the full-precision weights through the subject's runtime
measures the second alone: exllamav2 0.3.2 at FP16 disagrees with transformers by mean KLD 1.56
on a small llama-architecture model, so every EXL2 quant of it fails and the quantization is
blamed. The floor pass scores a few chunks three times, on the reference's own tokens: the
reference (its top-k and tail samples, cached), the floor model, and the subject.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qgate.backend import LoadedModel, TokenScores
from qgate.cache import Entry, backend_material
from qgate.cached_outputs import Field, check_arrays, expected_top_k
from qgate.check import CheckContext
from qgate.datasets import Dataset, load_dataset, make_chunks, scored_start
from qgate.policy.model import DatasetSpec
from qgate.scoring.kld import kld_estimate


@dataclass
class FloorScores:
    """Per scored token of the floor's chunks: KL divergence and log-probability of the actual
    next token, for the floor model and the subject against the reference."""

    chunk: np.ndarray  #: int [n]
    floor_kld: np.ndarray
    subject_kld: np.ndarray
    reference_logprob: np.ndarray
    floor_logprob: np.ndarray
    subject_logprob: np.ndarray

    @property
    def n_chunks(self) -> int:
        return int(self.chunk.max()) + 1 if len(self.chunk) else 0

    def per_chunk(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.chunk, weights=values) / np.bincount(self.chunk)


def measure_floor(
    ctx: CheckContext, floor_path: Path, datasets: list[str], chunks: int
) -> FloorScores:
    """Score the reference (cached), the floor model at ``floor_path`` (loaded by the subject's
    backend, freed after) and the subject on ``chunks`` chunks of each of ``datasets``."""
    reference = reference_floor_outputs(ctx, datasets, chunks)
    tokens = reference["tokens"]
    gather = np.concatenate([reference["top_ids"], reference["tail_ids"]], axis=2)
    floor_model = ctx.subject.backend.load_full_precision(floor_path, ctx.subject.options)
    try:
        floor = _score_all(floor_model, tokens, gather)
    finally:
        floor_model.close()
    subject = _score_all(ctx.subject.model, tokens, gather)
    top_k = reference["top_ids"].shape[2]

    def kld(scores: list[TokenScores]) -> np.ndarray:
        gathered = np.concatenate(
            [s.gathered_logprobs for s in scores if s.gathered_logprobs is not None]
        )
        return kld_estimate(
            reference["top_logprobs"].reshape(-1, top_k),
            gathered[:, :top_k],
            reference["tail_logprobs"].reshape(len(gathered), -1),
            gathered[:, top_k:],
        )

    per_chunk = tokens.shape[1] - scored_start(tokens.shape[1])
    return FloorScores(
        chunk=np.repeat(np.arange(len(tokens)), per_chunk),
        floor_kld=kld(floor),
        subject_kld=kld(subject),
        reference_logprob=reference["target_logprob"].reshape(-1).astype(np.float64),
        floor_logprob=np.concatenate([s.target_logprob for s in floor]),
        subject_logprob=np.concatenate([s.target_logprob for s in subject]),
    )


def _score_all(model: LoadedModel, tokens: np.ndarray, gather: np.ndarray) -> list[TokenScores]:
    start = scored_start(tokens.shape[1])
    return [
        model.score(row.tolist(), start=start, top_k=1, gather=gather[i])
        for i, row in enumerate(tokens)
    ]


def reference_floor_outputs(
    ctx: CheckContext, datasets: list[str], chunks: int
) -> dict[str, np.ndarray]:
    """The reference's tokens and scores on the floor's chunks, from the verified cache or
    computed (its top-k and tail samples, as the shared scoring pass keeps them)."""
    reference = ctx.reference
    assert reference is not None
    settings = ctx.settings
    n_ctx = reference.options.n_ctx
    texts = [load_dataset(DatasetSpec(name=name)) for name in datasets]
    entry = Entry.of(
        "runtime-floor-reference",
        model=reference.digest,
        texts=[t.digest for t in texts],
        chunks=chunks,
        top_k=settings.top_k,
        tail_samples=settings.tail_samples,
        **backend_material(reference.backend.name, reference.options),
    )
    rows, top_k = (
        n_ctx - scored_start(n_ctx),
        expected_top_k(settings.top_k, reference.info.vocab_size),
    )
    fields = {
        "tokens": Field("int", ("chunks", n_ctx), "ids"),
        "target_logprob": Field("float", ("chunks", rows), "logprobs"),
        "top_ids": Field("int", ("chunks", rows, top_k), "ids"),
        "top_logprobs": Field("float", ("chunks", rows, top_k), "logprobs"),
        "tail_ids": Field("int", ("chunks", rows, settings.tail_samples), "ids"),
        "tail_logprobs": Field("float", ("chunks", rows, settings.tail_samples), "logprobs"),
    }
    validate = functools.partial(_problem, fields=fields, vocab=reference.info.vocab_size)
    return ctx.reference_outputs(
        entry, lambda: _compute(ctx, texts, chunks, n_ctx), validate=validate
    )


def _problem(
    arrays: dict[str, np.ndarray], *, fields: dict[str, Field], vocab: int | None
) -> str | None:
    return check_arrays(arrays, fields, vocab=vocab)[0]


def _compute(
    ctx: CheckContext, texts: list[Dataset], chunks: int, n_ctx: int
) -> dict[str, np.ndarray]:
    assert ctx.reference is not None
    model = ctx.reference.model
    settings = ctx.settings
    tokens = np.concatenate(
        [
            make_chunks(
                lambda text: model.tokenize(text, add_bos=True),
                model.bos_token,
                dataset,
                n_ctx=n_ctx,
                max_chunks=chunks,
            )
            for dataset in texts
        ]
    )
    scores = [
        model.score(
            row.tolist(),
            start=scored_start(n_ctx),
            top_k=settings.top_k,
            tail_samples=settings.tail_samples,
        )
        for row in tokens
    ]

    def stacked(name: str) -> np.ndarray:
        parts = [getattr(s, name) for s in scores]
        if any(part is None for part in parts):  # no tail samples asked
            return np.zeros(
                (len(scores), len(scores[0]), 0), np.int32 if "ids" in name else np.float32
            )
        return np.stack(parts)

    return {
        "tokens": tokens.astype(np.int64),
        "target_logprob": stacked("target_logprob"),
        "top_ids": stacked("top_ids"),
        "top_logprobs": stacked("top_logprobs"),
        "tail_ids": stacked("tail_ids"),
        "tail_logprobs": stacked("tail_logprobs"),
    }
