"""Timing two models fairly: interleaved runs, each in a fresh process of its own.

One process cannot tell two loaded models' peak memory apart, and a fresh process keeps one
model's warm state from flattering the other: each run starts ``python -m
qgate_checks.payoff.probe`` on one model. After ``warmup`` discarded runs of each model, the
counted runs alternate reference, subject, reference, ... so slow drift on a shared machine
hits both alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qgate.errors import CheckError
from qgate.handle import ModelHandle

MIB = 2**20
PROBE_MODULE = "qgate_checks.payoff.probe"
#: the per-run figures compared between the models: key -> (caption, unit)
MEASURES: dict[str, tuple[str, str]] = {
    "load_s": ("load", "s"),
    "pp_tok_s": ("prompt processing", "tok/s"),
    "tg_tok_s": ("generation", "tok/s"),
    "peak_rss": ("peak RSS", "MiB"),
    "memory": ("model memory", "MiB"),
}


@dataclass
class Target:
    """A model to measure: what a measuring process needs to load it on its own."""

    label: str
    backend: str
    path: str
    options: dict[str, Any]


@dataclass
class Runs:
    """The counted runs of one model, one dict per run (see :mod:`qgate_checks.payoff.probe`)."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> np.ndarray:
        return np.array([number(run.get(key)) for run in self.runs], dtype=np.float64)

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


def number(value: Any) -> float:
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
    progress: Callable[[str, int, int, str], None] | None = None,
) -> tuple[Runs, Runs]:
    """``warmup`` discarded runs, then ``repetitions`` counted runs, alternating reference and
    subject so that drift on a shared machine hits both."""
    counted = {"reference": Runs(), "subject": Runs()}
    total = 2 * (warmup + repetitions)
    done = 0
    for run in range(warmup + repetitions):
        for role, model in (("reference", reference), ("subject", subject)):
            if progress is not None:
                progress(f"payoff: timing {subject.label} vs reference", done, total, "runs")
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
