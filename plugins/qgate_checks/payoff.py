"""``payoff``: is the quant actually faster and smaller than its reference?

Quantizing is meant to buy speed and memory. This check measures both models on the same machine
with the same backend settings: load time, prompt-processing tokens/s (one pass over a fixed
prompt of ``prompt_tokens`` tokens), greedy generation tokens/s (fixed prompt, fixed budget), peak
memory and file size, and judges the ratios subject / reference against the policy's floors.

Each run happens in a short-lived process of its own (``python -m qgate_checks.payoff_probe``)
that loads the model by backend name and path: one process cannot tell two loaded models' peak
memory apart, and a fresh process keeps one model's warm state from flattering the other. After
``warmup`` discarded runs of each model, ``repetitions`` runs alternate reference, subject,
reference, subject, ... so slow drift on a shared machine hits both alike; the figures are
medians, and each ratio gets a bootstrap interval over the repetitions (paired: run ``i`` of the
subject with run ``i`` of the reference). An interval that straddles a floor is inconclusive
and gets the policy's ``on_inconclusive``: a noisy runner asks for a human, it does not decide.

When the shared scoring pass has already run for this subject (list ``payoff`` after
``kl-divergence``), the mean KL divergence is read from it at no cost and the report gives the
gain per unit of quality lost, e.g. ``size_saving_per_kld = (1 - size_ratio) / mean_kld``.

The check reports what it measures, not what a quant type promises: Gemma 3 270M's "Q2_K" keeps
its 170M-parameter embedding at Q8_0, so its file is barely smaller than Q8_0's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qgate.check import Check, CheckContext
from qgate.datasets import load_dataset
from qgate.errors import CheckError
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.policy.model import DatasetSpec
from qgate.results import CheckResult, Comparison, Interval
from qgate.session import ModelHandle
from qgate.stats import bootstrap_interval

MIB = 2**20
PROBE_MODULE = "qgate_checks.payoff_probe"
#: the per-run figures compared between the models: key -> (caption, unit)
MEASURES: dict[str, tuple[str, str]] = {
    "load_s": ("load", "s"),
    "pp_tok_s": ("prompt processing", "tok/s"),
    "tg_tok_s": ("generation", "tok/s"),
    "peak_rss": ("peak RSS", "MiB"),
    "memory": ("model memory", "MiB"),
}


@dataclass
class PayoffOptions:
    min_generation_speedup: float | None = option(
        None,
        "smallest generation tokens/s of the subject over the reference's (1.3 = 30 % faster)",
        minimum=0,
    )
    min_prompt_speedup: float | None = option(
        None, "smallest prompt-processing tokens/s of the subject over the reference's", minimum=0
    )
    max_memory_ratio: float | None = option(
        None, "largest model memory of the subject over the reference's (0.5 = half)", minimum=0
    )
    max_size_ratio: float | None = option(
        None, "largest file size of the subject over the reference's", minimum=0
    )
    repetitions: int = option(
        5, "interleaved runs per model after the warm-up; the figures are their medians", minimum=3
    )
    warmup: int = option(1, "runs per model before the counted ones, discarded", minimum=0)
    prompt_tokens: int = option(
        128, "prompt length for prompt processing (capped at n_ctx)", minimum=8
    )
    generation_tokens: int = option(64, "greedy generation budget in tokens", minimum=4)
    generation_prompt_tokens: int = option(
        8, "length of the generation prompt, cut from the same text", minimum=1
    )
    text: Literal["en", "code", "pl", "ja", "ru", "ar", "hi"] = option(
        "en", "the shipped corpus the prompts are cut from"
    )
    quality: Literal["if-scored", "always", "never"] = option(
        "if-scored",
        "mean KLD for the quality-adjusted figures: if-scored reads it only when another check "
        "already ran the shared scoring pass (free); always runs that pass if needed",
    )
    run_timeout: float = option(600, "seconds one measuring process may take", minimum=1)


@dataclass
class Target:
    """A model to measure: what a measuring process needs to load it on its own."""

    label: str
    backend: str
    path: str
    options: dict[str, Any]


@dataclass
class Runs:
    """The counted runs of one model, one dict per run (see ``payoff_probe``)."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> np.ndarray:
        return np.array([_number(run.get(key)) for run in self.runs], dtype=np.float64)

    def median(self, key: str) -> float:
        values = self.values(key)
        return float(np.median(values)) if np.isfinite(values).all() and len(values) else np.nan

    def spread(self, key: str) -> float:
        """``(max - min) / median``: how much the runs disagree."""
        values = self.values(key)
        middle = self.median(key)
        if not np.isfinite(middle) or middle == 0:
            return np.nan
        return float((values.max() - values.min()) / middle)


def _number(value: Any) -> float:
    return (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan
    )


def target(handle: ModelHandle) -> Target:
    return Target(handle.info.label, handle.backend.name, str(handle.path), asdict(handle.options))


def probe(model: Target, request: dict[str, Any], run: int, timeout: float) -> dict[str, Any]:
    """One run of ``model`` in a fresh process. ``run`` seeds it (``options.seed + run``), so a
    backend that samples draws a new stream per run; the generation itself is greedy."""
    options = {**model.options, "seed": int(model.options.get("seed") or 0) + run}
    payload = {**request, "backend": model.backend, "path": model.path, "options": options}
    with tempfile.TemporaryDirectory(prefix="qgate-payoff-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request_path.write_text(json.dumps(payload))
        command = [sys.executable, "-m", PROBE_MODULE, str(request_path), str(result_path)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
            )
        except subprocess.TimeoutExpired:
            raise CheckError(
                f"measuring {model.label} took longer than run_timeout ({timeout:g} s)"
            ) from None
        result: dict[str, Any] = {}
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = {}
    if done.returncode != 0 or "error" in result or not result:
        reason = result.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckError(
            f"the process measuring {model.label} failed (exit {done.returncode}): {reason}"
        )
    return result


def measure(
    subject: Target,
    reference: Target,
    request: dict[str, Any],
    *,
    repetitions: int,
    warmup: int,
    timeout: float,
    progress: Any = None,
) -> tuple[Runs, Runs]:
    """``warmup`` discarded runs, then ``repetitions`` counted runs, alternating reference and
    subject so that drift on a shared machine hits both."""
    counted = {"reference": Runs(), "subject": Runs()}
    total = 2 * (warmup + repetitions)
    done = 0
    for run in range(warmup + repetitions):
        for role, model in (("reference", reference), ("subject", subject)):
            if progress is not None:
                progress.update(f"payoff: timing {subject.label} vs reference", done, total, "runs")
            figures = probe(model, request, run, timeout)
            done += 1
            if run >= warmup:
                figures["memory"] = model_memory(figures)
                counted[role].runs.append(figures)
    return counted["subject"], counted["reference"]


def model_memory(figures: dict[str, Any]) -> float | None:
    """What the model itself costs: the CUDA peak where torch reports one, else the process's
    peak RSS less its RSS just before the load (the interpreter's own ~40-100 MiB left out)."""
    gpu = figures.get("gpu_peak")
    if isinstance(gpu, (int, float)) and gpu > 0:
        return float(gpu)
    peak, before = figures.get("peak_rss"), figures.get("rss_before")
    if isinstance(peak, (int, float)) and isinstance(before, (int, float)):
        return float(max(peak - before, 0))
    return None


def artifact_size(handle: ModelHandle) -> int | None:
    """The file's size, or the sum over a model folder (EXL2, safetensors shards)."""
    if handle.info.file_size:
        return int(handle.info.file_size)
    path = Path(handle.path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else None


def ratio_of_medians(
    ctx: CheckContext, sub: Runs, ref: Runs, key: str
) -> tuple[float, Interval | None]:
    """``median(subject) / median(reference)`` and its paired bootstrap interval over runs."""
    s, r = sub.values(key), ref.values(key)
    value = float(np.median(s) / np.median(r)) if len(s) and len(r) else np.nan
    if not (np.isfinite(s).all() and np.isfinite(r).all() and (r > 0).all()):
        return value, None
    settings = ctx.policy.evaluation
    interval = bootstrap_interval(
        len(s),
        lambda idx: float(np.median(s[idx]) / np.median(r[idx])),
        resamples=settings.bootstrap,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    return value, interval


class PayoffCheck(Check):
    name = "payoff"
    description = (
        "speed, memory and size of the subject vs the reference (interleaved runs in separate "
        "processes, medians with bootstrap intervals)"
    )
    Options = PayoffOptions
    needs_reference = True

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        options: PayoffOptions = ctx.options
        assert ctx.reference is not None
        text = load_dataset(DatasetSpec(name=options.text)).text
        request = {
            "text": text,
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
            progress=ctx.progress,
        )
        measured_s = time.perf_counter() - started
        sub_size, ref_size = artifact_size(ctx.subject), artifact_size(ctx.reference)
        size_ratio = sub_size / ref_size if sub_size is not None and ref_size else np.nan

        ratios: dict[str, tuple[float, Interval | None]] = {
            key: ratio_of_medians(ctx, sub, ref, key) for key in MEASURES
        }
        tg, tg_interval = ratios["tg_tok_s"]
        pp, pp_interval = ratios["pp_tok_s"]
        memory, memory_interval = ratios["memory"]
        n = options.repetitions
        how = f"median of {n} interleaved runs each, after {options.warmup} warm-up"

        kld_mean = self._mean_kld(ctx, options)
        quality: dict[str, float] = {}
        if kld_mean is not None and kld_mean > 0:
            quality = {
                "kld_mean": kld_mean,
                "size_saving_per_kld": (1 - size_ratio) / kld_mean,
                "memory_saving_per_kld": (1 - memory) / kld_mean,
                "generation_speedup_per_kld": (tg - 1) / kld_mean,
            }

        summary: dict[str, dict[str, Any]] = {
            role: {key: runs.median(key) for key in MEASURES}
            | {"file_size": size, "gpu_peak": runs.median("gpu_peak")}
            for role, runs, size in (("subject", sub, sub_size), ("reference", ref, ref_size))
        }
        details: dict[str, Any] = {
            "subject": summary["subject"],
            "reference": summary["reference"],
            "ratios": {
                "generation_speedup": tg,
                "prompt_speedup": pp,
                "memory_ratio": memory,
                "size_ratio": size_ratio,
                "load_ratio": ratios["load_s"][0],
            },
            **quality,
            "repetitions": n,
            "warmup": options.warmup,
            "measured_s": round(measured_s, 3),
            "settings": {
                "prompt_tokens": options.prompt_tokens,
                "generation_tokens": options.generation_tokens,
                "n_ctx": ctx.subject.options.n_ctx,
                "threads": ctx.subject.options.threads,
                "gpu_layers": ctx.subject.options.gpu_layers,
                "kv_cache": ctx.subject.options.kv_cache,
            },
            "runs": {"subject": sub.runs, "reference": ref.runs},
            "tables": self._tables(sub, ref, ratios, sub_size, ref_size, size_ratio, quality, how),
            "series": self._series(sub, ref),
        }
        results = [
            ctx.result(
                "generation_speedup",
                _finite_or_none(tg),
                threshold=options.min_generation_speedup,
                comparison=Comparison.GE,
                interval=tg_interval,
                unit="x",
                message=self._generation_message(sub, ref, tg, how, options),
                details=details,
            ),
            ctx.result(
                "prompt_speedup",
                _finite_or_none(pp),
                threshold=options.min_prompt_speedup,
                comparison=Comparison.GE,
                interval=pp_interval,
                unit="x",
                message=f"prompt processing {sub.median('pp_tok_s'):.1f} tok/s vs reference "
                f"{ref.median('pp_tok_s'):.1f} tok/s, x{pp:.3f} ({how}; "
                f"{int(statistics.median(sub.values('prompt_tokens')))}-token prompt)",
            ),
            ctx.result(
                "memory_ratio",
                _finite_or_none(memory),
                threshold=options.max_memory_ratio,
                comparison=Comparison.LE,
                interval=memory_interval,
                message=f"model memory {_mib(sub.median('memory'))} vs reference "
                f"{_mib(ref.median('memory'))}, ratio {memory:.3f} (peak RSS "
                f"{_mib(sub.median('peak_rss'))} vs {_mib(ref.median('peak_rss'))}; {how})",
            ),
            ctx.result(
                "size_ratio",
                _finite_or_none(size_ratio),
                threshold=options.max_size_ratio,
                comparison=Comparison.LE,
                message=f"file {_mib(sub_size)} vs reference {_mib(ref_size)}, ratio "
                f"{size_ratio:.3f}"
                + (
                    f"; {quality['size_saving_per_kld']:.3g} of the size saved per nat of mean "
                    f"KLD ({kld_mean:.4g})"
                    if quality
                    else ""
                ),
            ),
        ]
        return results

    @staticmethod
    def _generation_message(
        sub: Runs, ref: Runs, speedup: float, how: str, options: PayoffOptions
    ) -> str:
        silent = [
            f"{role} run {i + 1}"
            for role, runs in (("reference", ref), ("subject", sub))
            for i, run in enumerate(runs.runs)
            if not run.get("generated_tokens")
        ]
        if silent:
            return (
                f"no generation speed: {', '.join(silent)} generated no token (the model ended "
                "at once); try another text or a longer generation prompt"
            )
        tokens = int(statistics.median(sub.values("generated_tokens")))
        return (
            f"generation {sub.median('tg_tok_s'):.2f} tok/s vs reference "
            f"{ref.median('tg_tok_s'):.2f} tok/s, x{speedup:.3f} ({how}; greedy, "
            f"{tokens} of {options.generation_tokens} tokens)"
        )

    @staticmethod
    def _mean_kld(ctx: CheckContext, options: PayoffOptions) -> float | None:
        """Mean KLD over every scored token, from the shared pass (free when it already ran)."""
        if options.quality == "never" or ctx.reference is None:
            return None
        if options.quality == "if-scored" and not ctx.evaluation.has_paired(
            ctx.subject, ctx.reference
        ):
            return None
        scores = ctx.paired_scores()
        klds = [s.kld for s in scores if len(s.kld)]
        if not klds:
            return None
        return float(np.concatenate(klds).mean())

    @staticmethod
    def _tables(
        sub: Runs,
        ref: Runs,
        ratios: dict[str, tuple[float, Interval | None]],
        sub_size: int | None,
        ref_size: int | None,
        size_ratio: float,
        quality: dict[str, float],
        how: str,
    ) -> list[dict[str, Any]]:
        rows = []
        for key, (caption, unit) in MEASURES.items():
            value, interval = ratios[key]
            scale = MIB if unit == "MiB" else 1
            rows.append(
                [
                    f"{caption} ({unit})",
                    _round(ref.median(key) / scale),
                    _round(sub.median(key) / scale),
                    _round(value),
                    f"[{interval.low:.3f}, {interval.high:.3f}]" if interval else "n/a",
                    _percent(ref.spread(key)),
                    _percent(sub.spread(key)),
                ]
            )
        if np.isfinite(ref.median("gpu_peak")) and np.isfinite(sub.median("gpu_peak")):
            rows.append(
                [
                    "CUDA peak (MiB)",
                    _round(ref.median("gpu_peak") / MIB),
                    _round(sub.median("gpu_peak") / MIB),
                    _round(sub.median("gpu_peak") / ref.median("gpu_peak")),
                    "",
                    _percent(ref.spread("gpu_peak")),
                    _percent(sub.spread("gpu_peak")),
                ]
            )
        rows.append(
            [
                "file size (MiB)",
                _round(ref_size / MIB) if ref_size else "n/a",
                _round(sub_size / MIB) if sub_size else "n/a",
                _round(size_ratio),
                "exact",
                "",
                "",
            ]
        )
        tables: list[dict[str, Any]] = [
            {
                "title": f"Subject vs reference ({how}; spread = (max - min) / median)",
                "columns": [
                    "measure",
                    "reference",
                    "subject",
                    "ratio",
                    "95% interval",
                    "reference spread",
                    "subject spread",
                ],
                "rows": rows,
            },
            {
                "title": "Counted runs, in the order they ran",
                "columns": [
                    "run",
                    "model",
                    "load (s)",
                    "prompt (tok/s)",
                    "generation (tok/s)",
                    "tokens generated",
                    "peak RSS (MiB)",
                    "model memory (MiB)",
                ],
                "rows": [
                    [
                        i + 1,
                        role,
                        _round(_number(run.get("load_s"))),
                        _round(_number(run.get("pp_tok_s"))),
                        _round(_number(run.get("tg_tok_s"))),
                        run.get("generated_tokens"),
                        _round(_number(run.get("peak_rss")) / MIB),
                        _round(_number(run.get("memory")) / MIB),
                    ]
                    for i in range(len(sub.runs))
                    for role, run in (("reference", ref.runs[i]), ("subject", sub.runs[i]))
                ],
            },
        ]
        if quality:
            tables.append(
                {
                    "title": "Gain per unit of quality lost (mean KLD from the shared scoring pass)",
                    "columns": ["figure", "value"],
                    "rows": [[k, _round(v)] for k, v in quality.items()],
                }
            )
        return tables

    @staticmethod
    def _series(sub: Runs, ref: Runs) -> list[dict[str, Any]]:
        runs = list(range(1, len(sub.runs) + 1))
        return [
            {
                "title": title,
                "x_label": "counted run",
                "y_label": "tokens/s",
                "lines": [
                    {"name": "reference", "x": runs, "y": ref.values(key).tolist()},
                    {"name": "subject", "x": runs, "y": sub.values(key).tolist()},
                ],
            }
            for key, title in (
                ("tg_tok_s", "Generation speed per run"),
                ("pp_tok_s", "Prompt processing speed per run"),
            )
        ]


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _round(value: float) -> float | str:
    return float(f"{value:.4g}") if np.isfinite(value) else "n/a"


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%" if np.isfinite(value) else "n/a"


def _mib(value: float | None) -> str:
    return f"{value / MIB:.1f} MiB" if value is not None and np.isfinite(value) else "n/a"


@hookimpl
def qgate_checks() -> list[Check]:
    return [PayoffCheck()]
