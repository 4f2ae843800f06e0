"""What the ``payoff`` check shows: the figures side by side, every run, and its messages."""

from __future__ import annotations

import statistics

import numpy as np

from qgate.figures import Chart, Line, Table
from qgate.results import Interval
from qgate_checks.payoff.options import PayoffOptions
from qgate_checks.payoff.timing import MEASURES, MIB, Runs, number

#: the columns of the table that compares the two models' medians
COMPARISON_COLUMNS = [
    "measure",
    "reference",
    "subject",
    "ratio",
    "95% interval",
    "reference spread",
    "subject spread",
]
#: the columns of the table of counted runs
RUN_COLUMNS = [
    "run",
    "model",
    "load (s)",
    "prompt (tok/s)",
    "generation (tok/s)",
    "tokens generated",
    "peak RSS (MiB)",
    "model memory (MiB)",
]


def tables(
    sub: Runs,
    ref: Runs,
    ratios: dict[str, tuple[float, Interval | None]],
    sizes: tuple[int | None, int | None, float],
    quality: dict[str, float],
    how: str,
) -> list[Table]:
    """The medians side by side, the counted runs, and (when known) the gain per nat of KLD.

    :param sizes: the subject's and the reference's file size, and their ratio.
    """
    out = [
        Table(
            f"Subject vs reference ({how}; spread = (max - min) / median)",
            COMPARISON_COLUMNS,
            _comparison_rows(sub, ref, ratios, sizes),
        ),
        Table("Counted runs, in the order they ran", RUN_COLUMNS, _run_rows(sub, ref)),
    ]
    if quality:
        out.append(
            Table(
                "Gain per unit of quality lost (mean KLD from the shared scoring pass)",
                ["figure", "value"],
                [[k, _round(v)] for k, v in quality.items()],
            )
        )
    return out


def _comparison_rows(
    sub: Runs,
    ref: Runs,
    ratios: dict[str, tuple[float, Interval | None]],
    sizes: tuple[int | None, int | None, float],
) -> list[list[str | int | float | None]]:
    rows: list[list[str | int | float | None]] = []
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
    sub_size, ref_size, size_ratio = sizes
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
    return rows


def _run_rows(sub: Runs, ref: Runs) -> list[list[str | int | float | None]]:
    return [
        [
            i + 1,
            role,
            _round(number(run.get("load_s"))),
            _round(number(run.get("pp_tok_s"))),
            _round(number(run.get("tg_tok_s"))),
            run.get("generated_tokens"),
            _round(number(run.get("peak_rss")) / MIB),
            _round(number(run.get("memory")) / MIB),
        ]
        for i in range(len(sub.runs))
        for role, run in (("reference", ref.runs[i]), ("subject", sub.runs[i]))
    ]


def charts(sub: Runs, ref: Runs) -> list[Chart]:
    """Speed per counted run, both models: drift or a noisy neighbour shows here."""
    runs: list[float | str] = [float(i) for i in range(1, len(sub.runs) + 1)]
    return [
        Chart(
            title,
            "counted run",
            "tokens/s",
            [
                Line("reference", runs, _floats(ref.values(key))),
                Line("subject", runs, _floats(sub.values(key))),
            ],
        )
        for key, title in (
            ("tg_tok_s", "Generation speed per run"),
            ("pp_tok_s", "Prompt processing speed per run"),
        )
    ]


def generation_message(
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


def prompt_message(sub: Runs, ref: Runs, speedup: float, how: str) -> str:
    prompt = int(statistics.median(sub.values("prompt_tokens")))
    return (
        f"prompt processing {sub.median('pp_tok_s'):.1f} tok/s vs reference "
        f"{ref.median('pp_tok_s'):.1f} tok/s, x{speedup:.3f} ({how}; {prompt}-token prompt)"
    )


def memory_message(sub: Runs, ref: Runs, ratio: float, how: str) -> str:
    return (
        f"model memory {mib(sub.median('memory'))} vs reference {mib(ref.median('memory'))}, "
        f"ratio {ratio:.3f} (peak RSS {mib(sub.median('peak_rss'))} vs "
        f"{mib(ref.median('peak_rss'))}; {how})"
    )


def size_message(sizes: tuple[int | None, int | None, float], quality: dict[str, float]) -> str:
    sub_size, ref_size, ratio = sizes
    text = f"file {mib(sub_size)} vs reference {mib(ref_size)}, ratio {ratio:.3f}"
    if quality:
        text += (
            f"; {quality['size_saving_per_kld']:.3g} of the size saved per nat of mean "
            f"KLD ({quality['kld_mean']:.4g})"
        )
    return text


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _round(value: float) -> float | str:
    return float(f"{value:.4g}") if np.isfinite(value) else "n/a"


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%" if np.isfinite(value) else "n/a"


def mib(value: float | None) -> str:
    return f"{value / MIB:.1f} MiB" if value is not None and np.isfinite(value) else "n/a"
