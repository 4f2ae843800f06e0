"""The ``payoff`` check: measure both models, judge the ratios, report the gain per nat."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from qgate.check import Check, CheckContext
from qgate.datasets import load_dataset
from qgate.figures import GENERATION_SPEEDUP, GENERATION_TOK_S, KLD_MEAN
from qgate.policy.model import DatasetSpec
from qgate.results import CheckResult, Comparison, Interval
from qgate_checks.payoff import report
from qgate_checks.payoff.options import PayoffOptions
from qgate_checks.payoff.timing import MEASURES, Runs, artifact_size, measure, target


@dataclass
class Measured:
    """Both models' counted runs, and the figures judged from them."""

    sub: Runs
    ref: Runs
    ratios: dict[str, tuple[float, Interval | None]]
    sizes: tuple[int | None, int | None, float]  #: subject, reference, ratio
    quality: dict[str, float]  #: the gains per nat of mean KLD, when the KLD is known
    seconds: float
    how: str  #: how the medians were taken, for the messages


class PayoffCheck(Check[PayoffOptions]):
    name = "payoff"
    description = (
        "speed, memory and size of the subject vs the reference (interleaved runs in separate "
        "processes, medians with bootstrap intervals)"
    )
    Options = PayoffOptions
    needs_reference = True

    def run(self, ctx: CheckContext[PayoffOptions]) -> list[CheckResult]:
        m = self.measure(ctx)
        options = ctx.options
        tg, tg_interval = m.ratios["tg_tok_s"]
        pp, pp_interval = m.ratios["pp_tok_s"]
        memory, memory_interval = m.ratios["memory"]
        headlines = {GENERATION_SPEEDUP.key: tg, GENERATION_TOK_S.key: m.sub.median("tg_tok_s")}
        if "kld_mean" in m.quality:
            headlines[KLD_MEAN.key] = m.quality["kld_mean"]
        generation = ctx.result(
            "generation_speedup",
            _finite_or_none(tg),
            threshold=options.min_generation_speedup,
            comparison=Comparison.GE,
            interval=tg_interval,
            unit="x",
            message=report.generation_message(m.sub, m.ref, tg, m.how, options),
            details=self.details(ctx, m),
            tables=report.tables(m.sub, m.ref, m.ratios, m.sizes, m.quality, m.how),
            charts=report.charts(m.sub, m.ref),
            headlines={k: v for k, v in headlines.items() if np.isfinite(v)},
        )
        prompt = ctx.result(
            "prompt_speedup",
            _finite_or_none(pp),
            threshold=options.min_prompt_speedup,
            comparison=Comparison.GE,
            interval=pp_interval,
            unit="x",
            message=report.prompt_message(m.sub, m.ref, pp, m.how),
        )
        memory_result = ctx.result(
            "memory_ratio",
            _finite_or_none(memory),
            threshold=options.max_memory_ratio,
            comparison=Comparison.LE,
            interval=memory_interval,
            message=report.memory_message(m.sub, m.ref, memory, m.how),
        )
        size = ctx.result(
            "size_ratio",
            _finite_or_none(m.sizes[2]),
            threshold=options.max_size_ratio,
            comparison=Comparison.LE,
            message=report.size_message(m.sizes, m.quality),
        )
        return [generation, prompt, memory_result, size]

    def measure(self, ctx: CheckContext[PayoffOptions]) -> Measured:
        """Time both models and derive the ratios (and the gains per nat of KLD, when known)."""
        options = ctx.options
        assert ctx.reference is not None
        request = {
            "text": load_dataset(DatasetSpec(name=options.text)).text,
            "prompt_tokens": options.prompt_tokens,
            "generation_tokens": options.generation_tokens,
            "generation_prompt_tokens": options.generation_prompt_tokens,
        }
        started = time.perf_counter()
        sub, ref = measure(
            target(ctx.subject),
            target(ctx.reference),
            request,
            repetitions=options.repetitions,
            warmup=options.warmup,
            timeout=options.run_timeout,
            progress=ctx.update,
        )
        seconds = time.perf_counter() - started
        sub_size, ref_size = artifact_size(ctx.subject), artifact_size(ctx.reference)
        size_ratio = sub_size / ref_size if sub_size is not None and ref_size else np.nan
        ratios = {key: ratio_of_medians(ctx, sub, ref, key) for key in MEASURES}
        how = (
            f"median of {options.repetitions} interleaved runs each, after {options.warmup} warm-up"
        )
        quality = self.quality(ctx, size_ratio, ratios)
        return Measured(sub, ref, ratios, (sub_size, ref_size, size_ratio), quality, seconds, how)

    @staticmethod
    def quality(
        ctx: CheckContext[PayoffOptions],
        size_ratio: float,
        ratios: dict[str, tuple[float, Interval | None]],
    ) -> dict[str, float]:
        """The gains per nat of mean KLD: what the quality lost bought."""
        kld_mean = _mean_kld(ctx)
        if kld_mean is None or kld_mean <= 0:
            return {}
        return {
            "kld_mean": kld_mean,
            "size_saving_per_kld": (1 - size_ratio) / kld_mean,
            "memory_saving_per_kld": (1 - ratios["memory"][0]) / kld_mean,
            "generation_speedup_per_kld": (ratios["tg_tok_s"][0] - 1) / kld_mean,
        }

    @staticmethod
    def details(ctx: CheckContext[PayoffOptions], m: Measured) -> dict[str, Any]:
        """The medians, ratios and every run, for the JSON results."""
        summary: dict[str, dict[str, Any]] = {
            role: {key: runs.median(key) for key in MEASURES}
            | {"file_size": size, "gpu_peak": runs.median("gpu_peak")}
            for role, runs, size in (
                ("subject", m.sub, m.sizes[0]),
                ("reference", m.ref, m.sizes[1]),
            )
        }
        options = ctx.subject.options
        return {
            "subject": summary["subject"],
            "reference": summary["reference"],
            "ratios": {
                "generation_speedup": m.ratios["tg_tok_s"][0],
                "prompt_speedup": m.ratios["pp_tok_s"][0],
                "memory_ratio": m.ratios["memory"][0],
                "size_ratio": m.sizes[2],
                "load_ratio": m.ratios["load_s"][0],
            },
            **m.quality,
            "repetitions": ctx.options.repetitions,
            "warmup": ctx.options.warmup,
            "measured_s": round(m.seconds, 3),
            "settings": {
                "prompt_tokens": ctx.options.prompt_tokens,
                "generation_tokens": ctx.options.generation_tokens,
                "n_ctx": options.n_ctx,
                "threads": options.threads,
                "gpu_layers": options.gpu_layers,
                "kv_cache": options.kv_cache,
            },
            "runs": {"subject": m.sub.runs, "reference": m.ref.runs},
        }


def ratio_of_medians(
    ctx: CheckContext[PayoffOptions], sub: Runs, ref: Runs, key: str
) -> tuple[float, Interval | None]:
    """``median(subject) / median(reference)`` and its paired bootstrap interval over runs."""
    s, r = sub.values(key), ref.values(key)
    value = float(np.median(s) / np.median(r)) if len(s) and len(r) else np.nan
    if not (np.isfinite(s).all() and np.isfinite(r).all() and (r > 0).all()):
        return value, None
    return value, ctx.bootstrap(len(s), lambda idx: float(np.median(s[idx]) / np.median(r[idx])))


def _mean_kld(ctx: CheckContext[PayoffOptions]) -> float | None:
    """Mean KLD over every scored token, from the shared pass (free when it already ran)."""
    quality = ctx.options.quality
    if quality == "never" or ctx.reference is None:
        return None
    if quality == "if-scored" and not ctx.has_paired_scores():
        return None
    klds = [s.kld for s in ctx.paired_scores() if len(s.kld)]
    if not klds:
        return None
    return float(np.concatenate(klds).mean())


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
