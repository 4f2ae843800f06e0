"""``long-context``: KV-cache and position damage over long sequences, per cache type.

A quantized KV cache hurts long contexts more than weight quantization does: output starts well
and degrades past ~4K tokens, and Q8 is the comfortable cache floor. But where most layers use
sliding-window attention (Gemma 3) a q4_0 cache can hurt by the same amount at every position. So
each cache type of the sweep gets three verdicts:

- ``late_excess_kld``: mean KLD of the last position bucket minus the first's (degrades late);
- ``max_bucket_kld``: the worst bucket's mean KLD against the f16-cache reference (damaged
  everywhere, which the excess alone would pass);
- ``retrieval_drop``: a pass key hidden at several depths of a long filler text, asked for at
  the end; the reference's accuracy minus the subject's.

Long sequences are built from the shipped corpora, each corpus at most once per sequence. Only a
sample of positions per bucket is scored (logits are computed nowhere else), the reference at f16.
The reference's outputs (the token sequence, its scores and its pass-key answers) are cached
together, so a second run of the same quant never loads the reference at the long context.
"""

from __future__ import annotations

import functools
import hashlib
import random
import time
from dataclasses import asdict, dataclass, replace
from itertools import pairwise

import numpy as np

from qgate.backend import KV_CACHE_BITS, GenerationSettings, LoadedModel
from qgate.cache import Entry, Field, backend_material, check_arrays, spot_check_picks
from qgate.check import Check, CheckContext
from qgate.datasets import BUILTIN_CORPORA, load_dataset
from qgate.errors import CheckError, PolicyError, UnsupportedKVCache
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.policy.model import DatasetSpec
from qgate.results import CheckResult, Interval, SkipCause
from qgate.scoring.evaluation import (
    SPOT_CHECK_TOLERANCE,
    disagreement,
    expected_top_k,
    tail_problem,
    top_problem,
)
from qgate.scoring.kld import kld_estimate
from qgate.stats import bootstrap_interval


@dataclass
class LongContextOptions:
    context: int = option(4096, "longest sequence scored, in tokens", minimum=256)
    kv_cache: list[str] = option(
        default_factory=lambda: ["f16", "q8_0", "q4_0"], help="subject KV cache types to sweep"
    )
    positions_per_bucket: int = option(48, "positions scored per position bucket", minimum=4)
    corpora: list[str] = option(
        default_factory=lambda: ["en", "code", "pl", "ru", "ja", "ar", "hi"],
        help="shipped corpora concatenated into the long sequence, each at most once",
    )
    max_late_excess_kld: float | None = option(
        0.05, "largest (last bucket - first bucket) mean KLD, nats", minimum=0
    )
    max_bucket_kld: float | None = option(0.1, "largest mean KLD of any bucket, nats", minimum=0)
    retrieval_depths: list[float] = option(
        default_factory=lambda: [0.1, 0.5, 0.9],
        help="where the pass key sits, as a share of the text",
    )
    retrieval_lengths: list[int] | None = option(
        None, "filler lengths in tokens (default: the context)"
    )
    max_retrieval_drop: float | None = option(
        0.34,
        "largest drop of pass-key accuracy vs the reference (0.34: one miss in three)",
        minimum=0,
        maximum=1,
    )


def bucket_edges(context: int) -> list[int]:
    """0-512, 512-1K, 1-2K, 2-4K, ... up to ``context`` (halves below 1K: 0-128, 128-256)."""
    edges = [0, min(512, context // 2)]
    while edges[-1] * 2 < context:
        edges.append(edges[-1] * 2)
    edges.append(context)
    return edges


def bucket_label(lo: int, hi: int) -> str:
    def k(n: int) -> str:
        return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)

    return f"{k(lo)}-{k(hi)}"


def sample_positions(edges: list[int], per_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced scored positions per bucket, and the bucket of each."""
    positions, buckets = [], []
    for b, (lo, hi) in enumerate(pairwise(edges)):
        picked = np.unique(
            np.linspace(max(lo, 1), hi - 1, num=min(per_bucket, hi - max(lo, 1))).astype(np.int64)
        )
        positions.append(picked)
        buckets.append(np.full(len(picked), b))
    return np.concatenate(positions), np.concatenate(buckets)


def long_sequence(model: LoadedModel, corpora: list[str], length: int) -> list[int]:
    """BOS + shipped corpora concatenated (each once), cut to ``length`` tokens.

    Corpora are added one at a time until there are enough tokens: tokenizing text that would
    be cut off anyway costs seconds on byte-level tokenizers.
    """
    text = ""
    tokens: list[int] = []
    for name in corpora:
        text += ("\n\n" if text else "") + load_dataset(DatasetSpec(name=name)).text
        tokens = model.tokenize(text, add_bos=True)
        if len(tokens) >= length:
            break
    tokens = tokens[:length]
    if len(tokens) < length:
        raise CheckError(
            f"the corpora {corpora} give {len(tokens)} tokens, fewer than the context {length}"
        )
    return tokens


class LongContextCheck(Check):
    name = "long-context"
    description = "per-position KLD and pass-key retrieval over long sequences, per KV cache type"
    Options = LongContextOptions
    needs_reference = True

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        options: LongContextOptions = ctx.options
        assert ctx.reference is not None
        unknown = [kv for kv in options.kv_cache if kv not in KV_CACHE_BITS]
        unknown += [c for c in options.corpora if c not in BUILTIN_CORPORA]
        if unknown:
            raise PolicyError(
                f"unknown KV cache types or corpora: {unknown}",
                key_path=f"checks[{ctx.spec.key}].options",
            )
        settings = ctx.policy.evaluation
        context = options.context
        edges = bucket_edges(context)
        positions, buckets = sample_positions(edges, options.positions_per_bucket)
        lengths = options.retrieval_lengths or [context - 16]
        probes = retrieval_probes(
            lengths, options.retrieval_depths, seed=ctx.policy.evaluation.seed
        )
        ref = self._reference_outputs(ctx, options, positions, probes)
        tokens = ref["tokens"].tolist()
        ref_hits = [bool(h) for h in ref["hits"]]
        gather = np.concatenate([ref["top_ids"], ref["tail_ids"]], axis=1)
        k = ref["top_ids"].shape[1]

        results: list[CheckResult] = []
        series_kld, series_ppl, rows, grid = [], [], [], []
        for kv in options.kv_cache:
            ctx.progress.log(
                f"{ctx.subject.info.label}: long context {context} tokens, KV cache {kv}"
            )
            try:
                with ctx.subject.borrowed(n_ctx=context, kv_cache=kv) as model:
                    sub = model.score(
                        tokens,
                        start=int(positions[0]),
                        positions=positions.tolist(),
                        top_k=1,  # the subject reports log-probabilities at the reference's ids
                        gather=gather,
                    )
                    hits = run_probes(model, probes)
            except UnsupportedKVCache as exc:  # e.g. a quantized cache on a transformers model
                # the backend keeps its cache unquantized: the risk measured here does not exist
                results.append(
                    ctx.skip(
                        str(exc), metric=f"late_excess_kld[{kv}]", cause=SkipCause.NOT_APPLICABLE
                    )
                )
                continue
            if sub.gathered_logprobs is None:
                raise CheckError(
                    "the backend ignored the request for log-probabilities at given ids"
                )
            at = sub.gathered_logprobs
            kld = kld_estimate(ref["top_logprobs"], at[:, :k], ref["tail_logprobs"], at[:, k:])
            per_bucket = np.array([kld[buckets == b].mean() for b in range(len(edges) - 1)])
            ppl_sub = [
                float(np.exp(-sub.target_logprob[buckets == b].mean()))
                for b in range(len(edges) - 1)
            ]
            first, last = kld[buckets == 0], kld[buckets == len(edges) - 2]
            excess = float(last.mean() - first.mean())
            results.append(
                ctx.result(
                    f"late_excess_kld[{kv}]",
                    excess,
                    threshold=options.max_late_excess_kld,
                    interval=_difference_interval(first, last, settings.bootstrap, settings.seed),
                    message=f"KV {kv}: KLD {first.mean():.4f} in {bucket_label(edges[0], edges[1])}, "
                    f"{last.mean():.4f} in {bucket_label(edges[-2], edges[-1])} (excess {excess:+.4f})",
                )
            )
            worst = int(np.argmax(per_bucket))
            results.append(
                ctx.result(
                    f"max_bucket_kld[{kv}]",
                    float(per_bucket[worst]),
                    threshold=options.max_bucket_kld,
                    interval=_mean_interval(
                        kld[buckets == worst], settings.bootstrap, settings.seed
                    ),
                    message=f"KV {kv}: worst bucket {bucket_label(edges[worst], edges[worst + 1])} "
                    f"with mean KLD {per_bucket[worst]:.4f} against the f16-cache reference",
                )
            )
            drop = float(np.mean(ref_hits) - np.mean(hits))
            results.append(
                ctx.result(
                    f"retrieval_drop[{kv}]",
                    drop,
                    threshold=options.max_retrieval_drop,
                    unit="%",
                    message=f"KV {kv}: pass key found {sum(hits)}/{len(hits)} times, reference {sum(ref_hits)}/{len(ref_hits)}",
                )
            )
            mids = [(lo + hi) / 2 for lo, hi in pairwise(edges)]
            series_kld.append({"name": f"KV {kv}", "x": mids, "y": per_bucket.tolist()})
            series_ppl.append({"name": f"KV {kv}", "x": mids, "y": ppl_sub})
            rows += [
                [
                    kv,
                    bucket_label(edges[b], edges[b + 1]),
                    round(float(per_bucket[b]), 5),
                    round(ppl_sub[b], 3),
                ]
                for b in range(len(edges) - 1)
            ]
            grid += [
                [kv, p.length, f"{p.depth:.0%}", "yes" if h else "no", "yes" if r else "no"]
                for p, h, r in zip(probes, hits, ref_hits, strict=True)
            ]
        if not series_kld:  # every KV cache type was skipped
            return results
        ppl_ref = [
            float(np.exp(-ref["target_logprob"][buckets == b].mean()))
            for b in range(len(edges) - 1)
        ]
        series_ppl.append({"name": "reference (f16)", "x": series_ppl[0]["x"], "y": ppl_ref})
        results[0].details.update(
            {
                "context": context,
                "buckets": [bucket_label(lo, hi) for lo, hi in pairwise(edges)],
                "series": [
                    {
                        "title": "KL divergence by position",
                        "x_label": "position (tokens)",
                        "y_label": "mean KLD (nats)",
                        "lines": series_kld,
                    },
                    {
                        "title": "Perplexity by position",
                        "x_label": "position (tokens)",
                        "y_label": "PPL",
                        "lines": series_ppl,
                    },
                ],
                "tables": [
                    {
                        "title": "Per bucket",
                        "columns": ["KV cache", "bucket", "mean KLD", "PPL"],
                        "rows": rows,
                    },
                    {
                        "title": "Pass-key retrieval",
                        "columns": ["KV cache", "length", "depth", "subject", "reference"],
                        "rows": grid,
                    },
                ],
            }
        )
        return results

    def _reference_outputs(
        self,
        ctx: CheckContext,
        options: LongContextOptions,
        positions: np.ndarray,
        probes: list[Probe],
    ) -> dict[str, np.ndarray]:
        """The reference's long sequence, its scores there and its pass-key hits, cached whole
        and verified on every read (see :mod:`qgate.cache`): a warm run never loads the
        reference at the long context, unless ``evaluation.cache_spot_check`` asks for it."""
        assert ctx.reference is not None
        settings = ctx.policy.evaluation
        evaluation = ctx.evaluation
        entry = self._entry(ctx, options, positions, probes)
        validate = functools.partial(
            long_reference_problem,
            context=options.context,
            positions=len(positions),
            probes=len(probes),
            top_k=expected_top_k(settings.top_k, ctx.reference.info.vocab_size),
            tail_samples=settings.tail_samples,
            vocab=ctx.reference.info.vocab_size,
        )
        cached = evaluation.cache.load(entry, validate=validate)
        if cached is not None and (
            not settings.cache_spot_check
            or self._spot_check(ctx, options, entry, cached, positions, probes)
        ):
            evaluation.counters["reference_cache_hits"] += 1
            return cached
        arrays = self._compute_reference(ctx, options, positions, probes)
        evaluation.counters["reference_cache_misses"] += 1
        evaluation.cache.store(entry, arrays)
        return arrays

    @staticmethod
    def _entry(
        ctx: CheckContext, options: LongContextOptions, positions: np.ndarray, probes: list[Probe]
    ) -> Entry:
        """Everything the reference's long-context outputs depend on."""
        assert ctx.reference is not None
        settings = ctx.policy.evaluation
        at_long_context = replace(ctx.reference.options, n_ctx=options.context, kv_cache="f16")
        return Entry.of(
            "long-context-reference",
            model=ctx.reference.digest,
            corpora=options.corpora,
            positions=hashlib.sha256(positions.tobytes()).hexdigest(),
            probes=[(p.length, p.depth, p.key) for p in probes],
            probe_decoding=asdict(probe_settings()),
            top_k=settings.top_k,
            tail_samples=settings.tail_samples,
            **backend_material(ctx.reference.backend.name, at_long_context),
        )

    @staticmethod
    def _compute_reference(
        ctx: CheckContext, options: LongContextOptions, positions: np.ndarray, probes: list[Probe]
    ) -> dict[str, np.ndarray]:
        assert ctx.reference is not None
        settings = ctx.policy.evaluation
        with ctx.reference.borrowed(n_ctx=options.context, kv_cache="f16") as reference:
            tokens = long_sequence(reference, options.corpora, options.context)
            scores = reference.score(
                tokens,
                start=int(positions[0]),
                positions=positions.tolist(),
                top_k=settings.top_k,
                tail_samples=settings.tail_samples,
            )
            hits = run_probes(reference, probes)
        m = settings.tail_samples
        arrays = {
            "tokens": np.asarray(tokens, dtype=np.int64),
            "hits": np.asarray(hits, dtype=bool),
            "target_logprob": scores.target_logprob,
            "top_ids": scores.top_ids,
            "top_logprobs": scores.top_logprobs,
            "tail_ids": scores.tail_ids
            if scores.tail_ids is not None
            else np.zeros((len(scores), 0), np.int32),
            "tail_logprobs": scores.tail_logprobs
            if scores.tail_logprobs is not None
            else np.zeros((len(scores), 0), np.float32),
        }
        if arrays["tail_ids"].shape[1] not in (0, m):
            raise CheckError("the backend returned an unexpected number of tail samples")
        return arrays

    @staticmethod
    def _spot_check(
        ctx: CheckContext,
        options: LongContextOptions,
        entry: Entry,
        cached: dict[str, np.ndarray],
        positions: np.ndarray,
        probes: list[Probe],
    ) -> bool:
        """Replay the cached scoring pass and ask a few cached pass-key probes again with the
        real reference; a disagreement discards the entry (reported).

        The pass is replayed whole, every position: the entry's unit is the one sequence, and a
        replay of the very same request is bit-identical, whereas scoring a subset of positions
        or a shorter prefix runs other kernels and moves log-probabilities by up to ~1e-2 nats
        (Gemma 3 270M, F16), past any tolerance that would still catch a forgery.
        """
        assert ctx.reference is not None
        evaluation = ctx.evaluation
        count = ctx.policy.evaluation.cache_spot_check
        started = time.perf_counter()
        asked = spot_check_picks(evaluation.spot_check_seed, entry, len(probes), count)
        worst = 0.0
        with ctx.reference.borrowed(n_ctx=options.context, kv_cache="f16") as reference:
            tokens = long_sequence(reference, options.corpora, options.context)
            if tokens != cached["tokens"].tolist():
                problem: str | None = "its token sequence is not the reference's tokenization"
            else:
                fresh = reference.score(
                    tokens,
                    start=int(positions[0]),
                    positions=positions.tolist(),
                    top_k=cached["top_ids"].shape[1],
                    gather=np.concatenate([cached["top_ids"], cached["tail_ids"]], axis=1),
                )
                evaluation.counters["spot_check_passes"] += 1
                rows = {name: cached[name] for name in SPOT_CHECKED}
                problem, worst = disagreement(rows, fresh, SPOT_CHECK_TOLERANCE)
                if problem is None:
                    hits = run_probes(reference, [probes[i] for i in asked])
                    evaluation.counters["spot_check_generations"] += len(asked)
                    if hits != [bool(cached["hits"][i]) for i in asked]:
                        problem = "the reference answers the pass-key probes otherwise"
        evaluation.cache.record_spot_check(
            entry,
            {
                "positions": len(positions),
                "probes": asked,
                "seed": evaluation.spot_check_seed,
                "max_abs_diff": worst,
                "tolerance": SPOT_CHECK_TOLERANCE,
                "agreed": problem is None,
            },
        )
        if problem is not None:
            evaluation.cache.reject(entry, f"spot-check: {problem}")
        evaluation.timings["spot_check"] += time.perf_counter() - started
        return problem is None


#: the cached values a spot-check compares with a fresh pass
SPOT_CHECKED = ("target_logprob", "top_ids", "top_logprobs", "tail_logprobs")


def long_reference_problem(
    arrays: dict[str, np.ndarray],
    *,
    context: int,
    positions: int,
    probes: int,
    top_k: int,
    tail_samples: int,
    vocab: int | None = None,
) -> str | None:
    """Why a cached long-context entry cannot be what a pass with these settings stored."""
    fields = {
        "tokens": Field("int", (context,), "ids"),
        "hits": Field("bool", (probes,)),
        "target_logprob": Field("float", (positions,), "logprobs"),
        "top_ids": Field("int", (positions, top_k), "ids"),
        "top_logprobs": Field("float", (positions, top_k), "logprobs"),
        "tail_ids": Field("int", (positions, "tail"), "ids"),
        "tail_logprobs": Field("float", (positions, "tail"), "logprobs"),
    }
    problem, sizes = check_arrays(arrays, fields, vocab=vocab)
    return (
        problem or top_problem(arrays["top_logprobs"]) or tail_problem(sizes["tail"], tail_samples)
    )


@dataclass(frozen=True)
class Probe:
    length: int
    depth: float
    key: str


def retrieval_probes(lengths: list[int], depths: list[float], *, seed: int) -> list[Probe]:
    rng = random.Random(f"passkey:{seed}")
    return [
        Probe(length, depth, str(rng.randint(10000, 99999)))
        for length in lengths
        for depth in depths
    ]


def probe_prompt(model: LoadedModel, probe: Probe) -> str:
    """English filler with the pass key at ``probe.depth``, ``probe.length`` tokens in all."""
    needle = f" The pass key is {probe.key}. Remember it: {probe.key} is the pass key. "
    question = "\n\nWhat is the pass key? The pass key is"
    budget = probe.length - len(model.tokenize(needle + question, add_bos=True)) - 4
    if budget < 64:
        raise CheckError(
            f"a retrieval length of {probe.length} tokens leaves no room for filler text"
        )
    filler = load_dataset(DatasetSpec(name="en")).text
    while len(filler) < budget * 6:  # enough characters for ``budget`` tokens in any tokenizer
        filler += "\n\n" + filler
    # tokenize a prefix only: ~6 characters per token is more than any tokenizer needs here
    text = model.detokenize(model.tokenize(filler[: budget * 6], add_bos=False)[:budget])
    cut = int(len(text) * probe.depth)
    cut = text.rfind(" ", 0, cut) + 1 or cut
    return text[:cut] + needle + text[cut:] + question


def probe_settings() -> GenerationSettings:
    """How a pass-key probe is decoded: greedy, a few tokens, one line."""
    return GenerationSettings(max_tokens=8, stop=["\n"])


def run_probes(model: LoadedModel, probes: list[Probe]) -> list[bool]:
    hits = []
    for probe in probes:
        answer = model.generate(probe_prompt(model, probe), probe_settings())
        hits.append(probe.key in answer.text)
    return hits


def _mean_interval(values: np.ndarray, resamples: int, seed: int) -> Interval | None:
    return bootstrap_interval(
        len(values), lambda idx: float(values[idx].mean()), resamples=resamples, seed=seed
    )


def _difference_interval(
    first: np.ndarray, last: np.ndarray, resamples: int, seed: int
) -> Interval | None:
    if len(first) < 2 or len(last) < 2:
        return None
    rng = np.random.default_rng(seed)
    a = first[rng.integers(0, len(first), size=(resamples, len(first)))].mean(axis=1)
    b = last[rng.integers(0, len(last), size=(resamples, len(last)))].mean(axis=1)
    low, high = np.quantile(b - a, [0.025, 0.975])
    return Interval(float(low), float(high))


@hookimpl
def qgate_checks() -> list[Check]:
    return [LongContextCheck()]
