"""qgate's PPL ratio, KLD and top-1 agreement vs llama.cpp's own `llama-perplexity`.

Both tools score the same text, on the same Gemma 3 270M F16 reference and Q2_K quant, with
n_ctx 512 and the same number of chunks (llama-perplexity's conventions: BOS-led chunks, second
half scored). llama.cpp keeps the reference's full 262k-entry distributions; qgate keeps the top-k exactly
and a systematic sample of the rest (an unbiased estimate of the tail term, see qgate/scoring/kld.py). Targets from the issue:
PPL ratio within 1 %, mean KLD within 3 %.

    python benchmarks/agreement.py --models models/ --llama-perplexity PATH [--chunks 8]

`--llama-perplexity` defaults to $LLAMA_PERPLEXITY; build it from the llama.cpp sources vendored
in the installed llama-cpp-python sdist:
    pip download --no-deps --no-binary :all: llama-cpp-python==$(python -c 'import llama_cpp; print(llama_cpp.__version__)')
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target llama-perplexity -j
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from gemma_ladder import build

from qgate.backend import BackendOptions
from qgate.cache import ReferenceCache
from qgate.datasets import load_dataset
from qgate.engine.evaluation import Evaluation
from qgate.handle import ModelHandle
from qgate.hashing import DigestIndex
from qgate.instruments import Instruments
from qgate.plugins import Registry
from qgate.policy.model import DatasetSpec, EvaluationSettings


def llama_perplexity(
    binary: Path, ref: Path, subject: Path, text: Path, chunks: int, threads: int, work: Path
) -> dict[str, float]:
    base = work / "base.kld"
    common = [
        "-c",
        "512",
        "-b",
        "512",
        "--chunks",
        str(chunks),
        "-t",
        str(threads),
        "-tb",
        str(threads),
    ]
    started = time.perf_counter()
    subprocess.run(
        [str(binary), "-m", str(ref), "-f", str(text), "--kl-divergence-base", str(base), *common],
        check=True,
        capture_output=True,
    )
    base_seconds = time.perf_counter() - started
    started = time.perf_counter()
    run = subprocess.run(
        [
            str(binary),
            "-m",
            str(subject),
            "--kl-divergence-base",
            str(base),
            "--kl-divergence",
            *common,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    log = run.stdout + run.stderr

    def grab(pattern: str) -> float:
        match = re.search(pattern, log)
        if not match:
            raise SystemExit(
                f"could not find {pattern!r} in llama-perplexity's output:\n{log[-3000:]}"
            )
        return float(match.group(1))

    return {
        "ppl_ratio": grab(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([0-9.]+)"),
        "kld_mean": grab(r"Mean\s+KLD:\s*([0-9.]+)"),
        "top1": grab(r"Same top p:\s*([0-9.]+)") / 100,
        "base_file_bytes": base.stat().st_size,
        "seconds_reference": base_seconds,
        "seconds_subject": seconds,
    }


def qgate_scores(
    ref: Path, subject: Path, text: Path, chunks: int, top_k: int, tail: int, threads: int
) -> dict[str, float]:
    registry = Registry.from_environment()
    backend = registry.backend("gguf")
    options = BackendOptions(n_ctx=512, threads=threads)
    instruments = Instruments()
    digests = DigestIndex(None)
    handles = [
        ModelHandle(
            p,
            backend,
            options,
            digests=digests,
            instruments=instruments,
        )
        for p in (ref, subject)
    ]
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = ReferenceCache(Path(cache_dir))
        evaluation = Evaluation(
            [load_dataset(DatasetSpec(path=str(text), domain="en"))],
            EvaluationSettings(chunks=chunks, top_k=top_k, tail_samples=tail),
            cache=cache,
            instruments=instruments,
        )
        started = time.perf_counter()
        (paired,) = evaluation.paired(handles[1], handles[0])
        seconds = time.perf_counter() - started
        cached = sum(f.stat().st_size for f in Path(cache_dir).rglob("*.npz"))
    for handle in handles:
        handle.close()
    return {
        "ppl_ratio": float(np.exp(np.mean(paired.ref_logprob) - np.mean(paired.sub_logprob))),
        "kld_mean": float(paired.kld.mean()),
        "top1": float((paired.ref_top1 == paired.sub_top1).mean()),
        "tokens": len(paired.kld),
        "cache_bytes": cached,
        "seconds_both": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--llama-perplexity", type=Path, default=os.environ.get("LLAMA_PERPLEXITY"))
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--tail-samples", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quant", default="Q2_K")
    args = parser.parse_args()
    if args.llama_perplexity is None or not Path(args.llama_perplexity).exists():
        raise SystemExit(
            "llama-perplexity not found: pass --llama-perplexity or set LLAMA_PERPLEXITY (see --help)"
        )
    ladder = build(args.models, (args.quant,))
    text = Path(__file__).parents[1] / "qgate" / "data" / "corpora" / "en.txt"
    with tempfile.TemporaryDirectory() as work:
        theirs = llama_perplexity(
            args.llama_perplexity,
            ladder["F16"],
            ladder[args.quant],
            text,
            args.chunks,
            args.threads,
            Path(work),
        )
    ours = qgate_scores(
        ladder["F16"],
        ladder[args.quant],
        text,
        args.chunks,
        args.top_k,
        args.tail_samples,
        args.threads,
    )
    print(
        f"Gemma 3 270M {args.quant} vs F16, en corpus, n_ctx 512, {args.chunks} chunks ({ours['tokens']} scored tokens), top-k {args.top_k} + {args.tail_samples} tail samples"
    )
    print(f"{'metric':<12} {'llama-perplexity':>17} {'qgate':>10} {'rel. diff':>10} {'target':>8}")
    failed = False
    for metric, target in (("ppl_ratio", 0.01), ("kld_mean", 0.03), ("top1", None)):
        diff = abs(ours[metric] - theirs[metric]) / theirs[metric]
        ok = target is None or diff <= target
        failed |= not ok
        print(
            f"{metric:<12} {theirs[metric]:>17.4f} {ours[metric]:>10.4f} {diff * 100:>9.2f}% {'' if target is None else f'<= {target:.0%}':>8} {'ok' if ok else 'MISSED'}"
        )
    print(
        f"reference storage: llama.cpp --kl-divergence-base {theirs['base_file_bytes'] / 2**20:.1f} MiB, "
        f"qgate cache {ours['cache_bytes'] / 2**20:.2f} MiB ({ours['cache_bytes'] / theirs['base_file_bytes']:.3%})"
    )
    print(
        f"wall time, reference + subject: llama-perplexity {theirs['seconds_reference'] + theirs['seconds_subject']:.1f}s, "
        f"qgate {ours['seconds_both']:.1f}s"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
