"""Evidence where mean KLD goes silent, on real models (docs/evidence.md).

    python benchmarks/evidence.py models/ runs/ --ladder qwen
    python benchmarks/evidence.py models/ runs/ --ladder gemma
    python benchmarks/evidence.py models/ runs/ --production Q4_K_M [--without-floor]

``--ladder qwen``: the instruction-tuned Qwen2.5-Coder-0.5B-Instruct; its shipped Q4_K_M is the
reference and Q8_0, Q4_0, Q3_K_S and Q2_K are requantized from it (benchmarks/qwen_ladder.py).
``--ladder gemma``: Gemma 3 270M, the F16 reference and Q8_0, Q4_K_M and Q2_K
(benchmarks/gemma_ladder.py). Either runs ``qgate check`` on every rung at once under
benchmarks/evidence.yaml (flips, wrong script, JSON, the KLD tail, the noise floor), writes
``{ladder}-evidence.{json,html}`` into runs/ and prints the figures as a Markdown table.

``--production RUNG``: one cold ``qgate check`` of that Gemma rung against the F16 under
``policies/production.yaml`` (no cache: the reference is scored live, so the noise floor is
measured), printing the wall time and the phases. ``--without-floor`` is the same run with the
floor's measurement switched off in the process (production as it was before it): the two wall
times are the cost of the floor.

Run each under ``flock /tmp/qgate-cpu.lock`` on a shared machine. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POLICY = HERE / "evidence.yaml"
PRODUCTION = HERE.parent / "policies" / "production.yaml"
LADDERS = {
    "qwen": ("Q4_K_M", ("Q8_0", "Q4_0", "Q3_K_S", "Q2_K")),
    "gemma": ("F16", ("Q8_0", "Q4_K_M", "Q2_K")),
}
#: run in the child process by --without-floor: production without the noise floor's passes
WITHOUT_FLOOR = (
    "import sys\n"
    "from qgate.engine.evaluation import Evaluation\n"
    "Evaluation._measure_floor = lambda self, reference, dataset, scores: 'switched off'\n"
    "from qgate.cli import main\n"
    "main(sys.argv[1:])\n"
)


def build(ladder: str, models: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    if ladder == "qwen":
        from qwen_ladder import build as build_qwen

        return build_qwen(models)
    from gemma_ladder import LADDER
    from gemma_ladder import build as build_gemma

    return build_gemma(models, LADDER)


def qgate(args: list[str], *, without_floor: bool = False) -> tuple[int, float]:
    """Run the qgate CLI in a child process: its exit code and wall time."""
    command = [sys.executable, "-c", WITHOUT_FLOOR] if without_floor else [sys.executable]
    if not without_floor:
        command += ["-m", "qgate"]
    started = time.perf_counter()
    code = subprocess.call([*command, *args])
    return code, time.perf_counter() - started


def run_ladder(ladder: str, models: Path, out: Path) -> Path:
    reference, rungs = LADDERS[ladder]
    paths = build(ladder, models)
    result = out / f"{ladder}-evidence.json"
    args = [
        *("check", *(str(paths[r]) for r in rungs), "--reference", str(paths[reference])),
        *("--policy", str(POLICY), "--no-cache", "--json", str(result)),
        *("--html", str(out / f"{ladder}-evidence.html"), "-q"),
    ]
    code, seconds = qgate(args)
    print(f"qgate exit code {code} after {seconds:.0f} s ({ladder}: {', '.join(rungs)})")
    return result


def _by_metric(subject: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"] or r["check"]: r for r in subject["results"]}


def _interval(result: dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    value, interval = result.get("value"), result.get("interval")
    if value is None:
        return "n/a"
    text = f"{value * scale:.{digits}f}"
    if interval:
        text += f" [{interval['low'] * scale:.{digits}f}, {interval['high'] * scale:.{digits}f}]"
    return text


def _share(value: object) -> str:
    return "n/a" if not isinstance(value, float | int) or math.isnan(value) else f"{value:.0%}"


def accuracy(results: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    """Task accuracy of reference and subject over every task, and the flips both ways."""
    flips = results.get("right_to_wrong", {}).get("details", {})
    tiers = flips.get("by_tier", {}).values()
    items = sum(t["items"] for t in tiers)
    if not items:
        return "n/a", "n/a", "n/a"
    ref = sum(t["both_right"] + t["right_to_wrong"] for t in tiers) / items
    sub = sum(t["both_right"] + t["wrong_to_right"] for t in tiers) / items
    pooled = flips.get("flips", {})
    moved = (
        f"{pooled.get('right_to_wrong')} / {pooled.get('wrong_to_right')} of "
        f"{pooled.get('items')} (p = {pooled.get('mcnemar_p', math.nan):.2g})"
    )
    return _share(ref), _share(sub), moved


def row(rung: str, subject: dict[str, Any]) -> list[str]:
    """One table row: the figures of one rung."""
    results = _by_metric(subject)
    ref_acc, sub_acc, moved = accuracy(results)
    floor = results.get("kld_mean", {}).get("details", {}).get("noise_floor", {})
    script = results.get("wrong_script_increase", {})
    json_ok = results.get("json_valid_drop", {})
    script_details, json_details = script.get("details", {}), json_ok.get("details", {})
    flips = results.get("right_to_wrong", {})
    return [
        rung,
        _interval(results.get("kld_mean", {}), digits=4),
        f"{results.get('kld_p99', {}).get('value', math.nan):.3f}",
        f"{results.get('kld_p999', {}).get('value', math.nan):.3f}",
        f"{floor.get('mean', math.nan):.2g} / {floor.get('p999', math.nan):.2g}"
        if floor.get("measured")
        else "not measured",
        f"{ref_acc} -> {sub_acc}",
        moved,
        f"{_interval(flips, 100)} % {flips.get('verdict', '')}",
        f"{_share(1 - script_details.get('reference_share', math.nan))} -> "
        f"{_share(1 - script_details.get('subject_share', math.nan))} {script.get('verdict', '')}",
        f"{_share(json_details.get('reference_share', math.nan))} -> "
        f"{_share(json_details.get('subject_share', math.nan))} {json_ok.get('verdict', '')}",
    ]


COLUMNS = [
    "rung",
    "mean KLD [95% CI]",
    "p99",
    "p99.9",
    "noise floor mean / p99.9",
    "task accuracy ref -> sub",
    "flips r->w / w->r (McNemar p)",
    "right-to-wrong % [exact CI] verdict",
    "wrong script ref -> sub",
    "valid JSON ref -> sub",
]


def table(result: Path, ladder: str) -> str:
    report = json.loads(result.read_text())
    rungs = dict(zip(LADDERS[ladder][1], report["subjects"], strict=False))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(rung, s)) + " |" for rung, s in rungs.items()]
    return "\n".join(lines)


def production(models: Path, out: Path, rung: str, without_floor: bool) -> None:
    """One cold production run of a Gemma rung, its wall time and phases."""
    paths = build("gemma", models)
    name = f"production-{rung.lower()}{'-without-floor' if without_floor else ''}"
    with tempfile.TemporaryDirectory() as cache:
        os.environ["QGATE_CACHE_DIR"] = cache  # cold: the reference is scored live
        code, seconds = qgate(
            [
                *("check", str(paths[rung]), "--reference", str(paths["F16"])),
                *("--policy", str(PRODUCTION), "--json", str(out / f"{name}.json"), "-q"),
            ],
            without_floor=without_floor,
        )
    report = json.loads((out / f"{name}.json").read_text())
    print(f"{name}: exit code {code}, wall time {seconds:.1f} s")
    for phase, value in sorted(report["timings"].items(), key=lambda kv: -kv[1]):
        print(f"  {phase:<32} {value:8.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, help="where the ladders are (or are built)")
    parser.add_argument("out", type=Path, help="where the results and reports go")
    parser.add_argument("--ladder", choices=sorted(LADDERS))
    parser.add_argument("--production", metavar="RUNG", help="time production on a Gemma rung")
    parser.add_argument("--without-floor", action="store_true")
    parser.add_argument("--table", action="store_true", help="only print the table of a run")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.production:
        production(args.models.resolve(), out, args.production, args.without_floor)
    if args.ladder:
        result = out / f"{args.ladder}-evidence.json"
        if not args.table:
            result = run_ladder(args.ladder, args.models.resolve(), out)
        print(table(result, args.ladder))


if __name__ == "__main__":
    main()
