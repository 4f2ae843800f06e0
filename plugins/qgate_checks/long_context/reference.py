"""The reference's outputs on one long sequence: the tokens, where the text and the pass keys
sit, and its scores at the scored positions (which also say which keys it retrieves).

They are cached whole per sequence and verified on every read (``CheckContext.reference_outputs``),
so a second run of the same quant never loads the reference at the long context. With
``evaluation.cache_spot_check`` the cached pass is replayed whole, every position: the entry's
unit is the one sequence, and a replay of the very same request is bit-identical, whereas
scoring a subset of positions or a shorter prefix runs other kernels and moves log-probabilities
by up to ~1e-2 nats (Gemma 3 270M, F16), past any tolerance that would still catch a forgery.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from qgate.backend import LoadedModel
from qgate.cache import Entry, backend_material
from qgate.cached_outputs import (
    SPOT_CHECK_TOLERANCE,
    Field,
    SpotCheck,
    check_arrays,
    disagreement,
    expected_top_k,
    tail_problem,
    top_problem,
)
from qgate.check import CheckContext
from qgate.errors import CheckError
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.long_context.passkey import Layout, layout
from qgate_checks.long_context.sequence import bucket_edges, pick_positions, rotated

#: the cached values a spot-check compares with a fresh pass
SPOT_CHECKED = ("target_logprob", "top_ids", "top_logprobs", "tail_logprobs")
#: bump when the way a sequence is laid out changes (needle wording, depths, question block)
LAYOUT_VERSION = "text+passkeys-1"


def reference_outputs(
    ctx: CheckContext[LongContextOptions], sequence: int
) -> dict[str, np.ndarray]:
    """The reference's outputs on sequence ``sequence``, from the verified cache or computed."""
    assert ctx.reference is not None
    validate = functools.partial(
        long_reference_problem,
        context=ctx.options.context,
        top_k=expected_top_k(ctx.settings.top_k, ctx.reference.info.vocab_size),
        tail_samples=ctx.settings.tail_samples,
        vocab=ctx.reference.info.vocab_size,
    )
    entry = cache_entry(ctx, sequence)
    return ctx.reference_outputs(
        entry,
        lambda: compute(ctx, sequence),
        validate=validate,
        replay=lambda cached: replay(ctx, sequence, cached),
    )


def cache_entry(ctx: CheckContext[LongContextOptions], sequence: int) -> Entry:
    """Everything the reference's outputs on one sequence depend on."""
    assert ctx.reference is not None
    options, settings = ctx.options, ctx.settings
    at_long_context = replace(ctx.reference.options, n_ctx=options.context, kv_cache="f16")
    return Entry.of(
        "long-context-reference",
        model=ctx.reference.digest,
        layout=LAYOUT_VERSION,
        corpora=rotated(options.corpora, sequence),
        sequence=sequence,
        needles=options.needles,
        positions_per_bucket=options.positions_per_bucket,
        passkey_seed=settings.seed,
        top_k=settings.top_k,
        tail_samples=settings.tail_samples,
        **backend_material(ctx.reference.backend.name, at_long_context),
    )


def build(model: LoadedModel, options: LongContextOptions, sequence: int, seed: int) -> Layout:
    return layout(
        model, options.corpora, options.context, options.needles, sequence=sequence, seed=seed
    )


def scored_positions(sequence_layout: Layout, options: LongContextOptions) -> np.ndarray:
    """The text positions sampled per bucket, and every pass-key token."""
    text = pick_positions(
        sequence_layout.text, bucket_edges(options.context), options.positions_per_bucket
    )
    return np.union1d(text, sequence_layout.key_positions()).astype(np.int64)


def compute(ctx: CheckContext[LongContextOptions], sequence: int) -> dict[str, np.ndarray]:
    """Lay out the sequence with the reference's tokenizer and score it (an f16 cache)."""
    assert ctx.reference is not None
    options, settings = ctx.options, ctx.settings
    with ctx.reference.borrowed(n_ctx=options.context, kv_cache="f16") as reference:
        placed = build(reference, options, sequence, settings.seed)
        positions = scored_positions(placed, options)
        scores = reference.score(
            placed.tokens,
            start=int(positions[0]),
            positions=positions.tolist(),
            top_k=settings.top_k,
            tail_samples=settings.tail_samples,
        )
    rows = len(scores)
    arrays = {
        "tokens": np.asarray(placed.tokens, dtype=np.int64),
        "positions": positions,
        "text": np.isin(positions, placed.text),
        "keys": placed.keys,
        "depths": placed.depths,
        "target_logprob": scores.target_logprob,
        "top_ids": scores.top_ids,
        "top_logprobs": scores.top_logprobs,
        "tail_ids": scores.tail_ids
        if scores.tail_ids is not None
        else np.zeros((rows, 0), np.int32),
        "tail_logprobs": scores.tail_logprobs
        if scores.tail_logprobs is not None
        else np.zeros((rows, 0), np.float32),
    }
    if arrays["tail_ids"].shape[1] not in (0, settings.tail_samples):
        raise CheckError("the backend returned an unexpected number of tail samples")
    return arrays


def replay(
    ctx: CheckContext[LongContextOptions], sequence: int, cached: dict[str, np.ndarray]
) -> SpotCheck:
    """Lay the sequence out again and replay the cached scoring pass whole."""
    assert ctx.reference is not None
    record: dict[str, object] = {"sequence": sequence, "positions": len(cached["positions"])}
    with ctx.reference.borrowed(n_ctx=ctx.options.context, kv_cache="f16") as reference:
        placed = build(reference, ctx.options, sequence, ctx.settings.seed)
        if placed.tokens != cached["tokens"].tolist():
            return SpotCheck("its token sequence is not the reference's layout", record)
        positions = cached["positions"]
        fresh = reference.score(
            placed.tokens,
            start=int(positions[0]),
            positions=positions.tolist(),
            top_k=cached["top_ids"].shape[1],
            gather=np.concatenate([cached["top_ids"], cached["tail_ids"]], axis=1),
        )
        ctx.count("spot_check_passes")
    rows = {name: cached[name] for name in SPOT_CHECKED}
    problem, worst = disagreement(rows, fresh, SPOT_CHECK_TOLERANCE)
    record["max_abs_diff"] = worst
    return SpotCheck(problem, record)


def long_reference_problem(
    arrays: dict[str, np.ndarray],
    *,
    context: int,
    top_k: int,
    tail_samples: int,
    vocab: int | None = None,
) -> str | None:
    """Why a cached long-context entry cannot be what a pass with these settings stored."""
    fields = {
        "tokens": Field("int", (context,), "ids"),
        "positions": Field("int", ("n",)),
        "text": Field("bool", ("n",)),
        "keys": Field("int", ("needles", 2)),
        "depths": Field("float", ("needles",)),
        "target_logprob": Field("float", ("n",), "logprobs"),
        "top_ids": Field("int", ("n", top_k), "ids"),
        "top_logprobs": Field("float", ("n", top_k), "logprobs"),
        "tail_ids": Field("int", ("n", "tail"), "ids"),
        "tail_logprobs": Field("float", ("n", "tail"), "logprobs"),
    }
    problem, sizes = check_arrays(arrays, fields, vocab=vocab)
    return (
        problem
        or layout_problem(arrays, context)
        or top_problem(arrays["top_logprobs"])
        or tail_problem(sizes["tail"], tail_samples)
    )


def layout_problem(arrays: dict[str, np.ndarray], context: int) -> str | None:
    """Scored positions ascending inside the context, and every key token among them."""
    positions, keys = arrays["positions"], arrays["keys"]
    if len(positions) == 0 or positions[0] < 1 or positions[-1] >= context:
        return f"its scored positions are not inside [1, {context})"
    if np.any(np.diff(positions) <= 0):
        return "its scored positions are not ascending"
    if len(keys) and (np.any(keys[:, 0] >= keys[:, 1]) or np.any(keys < 1)):
        return "its pass-key spans are empty or out of order"
    spans = [np.arange(start, end) for start, end in keys.tolist()]
    key_positions = np.concatenate(spans) if spans else np.zeros(0, np.int64)
    if (
        not np.isin(key_positions, positions).all()
        or arrays["text"][np.isin(positions, key_positions)].any()
    ):
        return "its pass-key tokens are not scored, or scored as text"
    if not ((arrays["depths"] >= 0) & (arrays["depths"] <= 1)).all():
        return "its pass-key depths are not shares of the text"
    return None
