"""Calibrate the floors of `production` on real models: the table of docs/thresholds.md.

    flock /tmp/qgate-cpu.lock python benchmarks/thresholds.py --models .models/thresholds

For each model it builds the weight ladder with llama.cpp's quantizer (llama_model_quantize) and
runs `qgate check` under `production`, then writes one table row per judged metric (value,
interval, floor, verdict, the interval's half-width against a third of the floor) into
docs/thresholds.md between the `thresholds` markers, with each run's wall time.

- Gemma 3 270M: the F16 reference (the shipped Q4_K_M upcast to F16: ``gemma_ladder.py``) and
  Q8_0, Q6_K, Q4_K_M, Q3_K_M, Q2_K quantized from it.
- Qwen2.5-Coder-0.5B-Instruct: only a Q4_K_M ships, so it is its own reference; its weight rows
  are requantizations of that Q4_K_M, and its KV rows compare it with itself.
- KV rows: the reference as its own subject under production's ``long-context`` entry with
  ``kv_cache: [q8_0]`` or ``[q4_0]`` at 4K and 8K tokens (plus production's ``quant-floor``,
  whose KV floor holds from 4,096 tokens on). Only the cache differs from the reference's run.

Weight rows run production's weight-damage checks (``perplexity``, ``kl-divergence``,
``quant-floor``) over production's datasets and chunks; ``--full`` runs every check of
production (generation checks, parity, long-context at 4K) and takes several times longer.
Finished rows are kept in the record, ``docs/runs/thresholds.json`` (``--record``), and not run
again (``--again`` reruns them); ``--render`` rewrites the table from the record alone.
On a GPU build of llama-cpp-python pass ``--gpu-layers -1``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEIGHTS = ("Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K")
KV_CACHES = ("q8_0", "q4_0")
CONTEXTS = (4096, 8192)
WEIGHT_CHECKS = ("perplexity", "kl-divergence", "quant-floor")
BEGIN, END = "<!-- thresholds:begin -->", "<!-- thresholds:end -->"
RECORD = ROOT / "docs" / "runs" / "thresholds.json"  # the finished rows: the table's source


@dataclass
class Run:
    """One `qgate check` of the table: a subject, its reference and the policy it runs under."""

    key: str  #: e.g. gemma/Q8_0 or gemma/kv-q4_0-4096
    model: str
    row: str  #: what the table calls it
    subject: Path
    reference: Path
    policy: dict[str, Any]


def production() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "policies" / "production.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def weight_policy(full: bool) -> dict[str, Any]:
    policy = production()
    if not full:
        policy["checks"] = [
            c for c in policy["checks"] if c["use"] in WEIGHT_CHECKS and "when" not in c
        ]
        policy["name"] = "production (weight checks)"
    return policy


def kv_policy(kv: str, context: int) -> dict[str, Any]:
    """Production's long-context and quant-floor entries, the sweep set to one cache type."""
    policy = production()
    checks = []
    for check in policy["checks"]:
        if check["use"] == "long-context":
            check["options"] = {**check["options"], "context": context, "kv_cache": [kv]}
            checks.append(check)
        elif check["use"] == "quant-floor" and "when" not in check:
            checks.append(check)
    policy["checks"] = checks
    policy["name"] = f"production (long-context, KV {kv} at {context})"
    return policy


def gemma_runs(directory: Path, full: bool, contexts: tuple[int, ...]) -> list[Run]:
    from benchmarks.gemma_ladder import build

    rungs = tuple(w for w in WEIGHTS if w != "Q4_K_M")
    paths = build(directory / "gemma", rungs)
    # the shipped Q4_K_M is the F16's source; the row is the F16 quantized again, like the others
    requant = directory / "gemma" / "gemma-q4_k_m-from-f16.gguf"
    if not requant.exists():
        from qgate_gguf.quantize import quantize

        quantize(paths["F16"], requant, "Q4_K_M")
    paths["Q4_K_M"] = requant
    return ladder_runs("gemma", paths["F16"], paths, full, contexts)


def qwen_runs(directory: Path, full: bool, contexts: tuple[int, ...]) -> list[Run]:
    from benchmarks.qwen_ladder import build

    rungs = tuple(w for w in WEIGHTS if w != "Q4_K_M")
    paths = build(directory / "qwen", file_types=rungs)
    return ladder_runs("qwen", paths["Q4_K_M"], paths, full, contexts)


def ladder_runs(
    model: str, reference: Path, paths: dict[str, Path], full: bool, contexts: tuple[int, ...]
) -> list[Run]:
    weights = [
        Run(f"{model}/{w}", model, f"{w} weights", paths[w], reference, weight_policy(full))
        for w in WEIGHTS
        if paths[w] != reference  # Qwen's Q4_K_M is its reference: nothing to compare
    ]
    caches = [
        Run(
            f"{model}/kv-{kv}-{n}",
            model,
            f"{kv} cache at {n // 1024}K",
            reference,
            reference,
            kv_policy(kv, n),
        )
        for n in contexts
        for kv in KV_CACHES
    ]
    order = row_keys(model, contexts)
    return sorted(weights + caches, key=lambda run: order.index(run.key))


def row_keys(model: str, contexts: tuple[int, ...] = CONTEXTS) -> list[str]:
    """The table's order of a model's rows: the shortest context's KV rows first, then the
    weights, then the longer contexts'."""
    caches = [f"{model}/kv-{kv}-{n}" for n in sorted(contexts) for kv in KV_CACHES]
    weights = [f"{model}/{w}" for w in WEIGHTS]
    first = len(KV_CACHES)
    return caches[:first] + weights + caches[first:]


def run_one(run: Run, directory: Path, extra: list[str]) -> dict[str, Any]:
    """`qgate check` the run; its JSON report's rows and the wall time."""
    work = directory / "runs" / run.key.replace("/", "-")
    work.mkdir(parents=True, exist_ok=True)
    policy_file = work / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(run.policy, sort_keys=False))
    report = work / "report.json"
    command = [
        sys.executable,  # the qgate of this interpreter, wherever its scripts were installed
        "-m",
        "qgate",
        "check",
        str(run.subject),
        "--reference",
        str(run.reference),
        "--policy",
        str(policy_file),
        "--cache-dir",
        str(directory / "cache"),
        "--json",
        str(report),
        "-q",
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{run.key}: qgate check exited {done.returncode}")
    data = json.loads(report.read_text())
    results = data["subjects"][0]["results"]
    return {
        "model": run.model,
        "row": run.row,
        "policy": run.policy["name"],
        "exit": done.returncode,
        "wall_s": round(wall, 1),
        "command": " ".join(["qgate", *command[3:]]),
        "results": [row(r) for r in results if r["verdict"] != "skip"],
    }


def row(result: dict[str, Any]) -> dict[str, Any]:
    interval = result.get("interval")
    evidence = (result.get("details") or {}).get("evidence") or {}
    return {
        "metric": f"{result['check_id']}.{result['metric']}",
        "value": result["value"],
        "unit": result.get("unit") or "",
        "interval": [interval["low"], interval["high"]] if interval else None,
        "threshold": result.get("threshold"),
        "comparison": result.get("comparison"),
        "verdict": result["verdict"],
        "severity": result.get("severity"),
        "resolution": evidence.get("resolution"),
        "target": evidence.get("target"),
        "exact": bool(evidence.get("exact")),
        "sequences": (result.get("details") or {}).get("sequences"),
    }


def shown(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "%":
        return f"{value * 100:+.2f} %"
    return f"{value:.4g}"


def table(done: dict[str, dict[str, Any]]) -> str:
    """The markdown of every finished run, in the order the runs were listed."""
    lines = [
        "| model | subject | gate | metric | value | interval | floor | verdict | "
        "half-width / target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in done.values():
        gate = "pass" if entry["exit"] == 0 else "**FAIL**"
        for r in entry["results"]:
            if r["threshold"] is None:
                continue
            unit = r["unit"]
            interval = (
                f"[{shown(r['interval'][0], unit)}, {shown(r['interval'][1], unit)}]"
                if r["interval"]
                else ("exact" if r["exact"] else "none")
            )
            power = (
                f"{shown(r['resolution'], unit)} / {shown(r['target'], unit)}"
                if r["resolution"] is not None
                else ""
            )
            verdict = r["verdict"] if r["verdict"] != "fail" else "**fail**"
            lines.append(
                f"| {entry['model']} | {entry['row']} | {gate} | `{r['metric']}` | "
                f"{shown(r['value'], unit)} | {interval} | {r['comparison'] or ''} "
                f"{shown(r['threshold'], unit)} | {verdict} | {power} |"
            )
    invocations = {e.get("invocation", "") for e in done.values()}
    shared = invocations.pop() if len(invocations) == 1 else None
    lines.append("")
    lines.append(
        "| model | subject | policy | exit | wall time |" + ("" if shared else " run by |")
    )
    lines.append("|---|---|---|---|---|" + ("" if shared else "---|"))
    lines += [
        f"| {e['model']} | {e['row']} | {e['policy']} | {e['exit']} | {e['wall_s']:.0f} s |"
        + ("" if shared else f" `{e.get('invocation', '')}` |")
        for e in done.values()
    ]
    if shared:
        lines += ["", f"Every row was run by `{shared}`."]
    return "\n".join(lines)


def write_doc(doc: Path, record: Path, done: dict[str, dict[str, Any]]) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    shown_record = record.relative_to(ROOT) if record.is_relative_to(ROOT) else record
    body = (
        f"{BEGIN}\nWritten by `benchmarks/thresholds.py` from its record, `{shown_record}`;\n"
        "the last table gives each row's exit code and wall time.\n\n"
        f"{table(done)}\n{END}"
    )
    doc.write_text(head + body + tail)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=ROOT / ".models" / "thresholds")
    parser.add_argument("--model", choices=["gemma", "qwen", "both"], default="gemma")
    parser.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    parser.add_argument(
        "--only", nargs="+", help="run only these rows, in this order (gemma/Q8_0, ...)"
    )
    parser.add_argument("--full", action="store_true", help="every check of production")
    parser.add_argument("--again", action="store_true", help="rerun finished rows")
    parser.add_argument("--threads", type=int, help="CPU threads for qgate check")
    parser.add_argument("--gpu-layers", type=int, help="layers offloaded (-1: all) on a GPU")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "thresholds.md")
    parser.add_argument(
        "--record", type=Path, default=RECORD, help="the finished rows, kept between runs"
    )
    parser.add_argument("--render", action="store_true", help="only rewrite the doc's table")
    args = parser.parse_args()
    extra = [] if args.threads is None else ["--threads", str(args.threads)]
    extra += [] if args.gpu_layers is None else ["--gpu-layers", str(args.gpu_layers)]
    store = args.record
    done: dict[str, dict[str, Any]] = json.loads(store.read_text()) if store.exists() else {}
    if args.render:
        write_doc(args.doc, store, ordered_rows(done))
        return
    contexts = tuple(args.contexts)
    runs: list[Run] = []
    if args.model in ("gemma", "both"):
        runs += gemma_runs(args.models, args.full, contexts)
    if args.model in ("qwen", "both"):
        runs += qwen_runs(args.models, args.full, contexts)
    invocation = "python benchmarks/thresholds.py " + " ".join(sys.argv[1:])
    if args.only:  # in the order given
        by_key = {r.key: r for r in runs}
        unknown = [key for key in args.only if key not in by_key]
        if unknown:
            raise SystemExit(f"no such rows: {unknown}; rows: {list(by_key)}")
        runs_now = [by_key[key] for key in args.only]
    else:
        runs_now = runs
    for run in runs_now:
        if run.key in done and not args.again:
            continue
        print(f"{run.key}: qgate check under {run.policy['name']}", flush=True)
        try:
            done[run.key] = run_one(run, args.models, extra)
        except RuntimeError as exc:  # one broken row does not stop the others
            print(exc, flush=True)
            continue
        done[run.key]["invocation"] = invocation
        print(f"{run.key}: exit {done[run.key]['exit']} in {done[run.key]['wall_s']} s", flush=True)
        store.write_text(json.dumps(done, indent=1) + "\n")
        write_doc(args.doc, store, ordered_rows(done))


def ordered_rows(done: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Finished rows in the table's order (Gemma's, then Qwen's; unknown keys last)."""
    order = [key for model in ("gemma", "qwen") for key in row_keys(model)]
    ranked = sorted(done, key=lambda key: order.index(key) if key in order else len(order))
    return {key: done[key] for key in ranked}


if __name__ == "__main__":
    main()
