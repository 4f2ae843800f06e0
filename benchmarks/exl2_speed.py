"""qgate's EXL2 scoring pass vs exllamav2's own perplexity loop, on one CUDA GPU.

Both score the same chunks of qgate's English corpus (n_ctx tokens each, BOS first) with the same
EXL2 model. exllamav2's loop is the one its test_inference script runs for perplexity: forward
the whole chunk through the model with a cache, log-softmax the logits, gather the targets.
qgate's pass is the subject pass of a `perplexity` + `kl-divergence` check: logits only where
scored (the second half of each chunk), the subject's log-probabilities at the reference's
top-k and tail-sample ids, and its top-1. The Hugging Face reference's scores come from the warm
reference cache, as on every run after the first, so the timed part is the subject's pass only.

    python benchmarks/exl2_speed.py --subject model-exl2-4.0 --reference model-hf [--chunks 16]
        [--text FILE] [--ref-dtype float32] [--json OUT]

Prints both wall times (median of --repeats), the ratio, and both perplexities (which must agree).
``--text`` scores another text than qgate's English corpus (a real model needs more than its
dozen chunks to time); ``--ref-dtype`` is the Hugging Face reference's ``extra.dtype`` (Gemma 3
needs float32: in float16 its activations overflow).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import BackendOptions
from qgate.cache import ReferenceCache
from qgate.datasets import load_dataset, scored_start
from qgate.engine.evaluation import Evaluation
from qgate.handle import ModelHandle
from qgate.hashing import DigestIndex
from qgate.instruments import Instruments
from qgate.plugins import Registry
from qgate.policy.model import DatasetSpec, EvaluationSettings
from qgate.scoring.paired import PairedScores

CORPUS = Path(__file__).parents[1] / "qgate" / "data" / "corpora" / "en.txt"


def qgate_pass(
    subject: Path, reference: Path, cache_dir: Path, args: argparse.Namespace
) -> tuple[list[float], PairedScores]:
    """Subject pass wall times (the reference cache warmed first) and the last pass's scores."""
    registry = Registry.from_environment()
    instruments = Instruments()
    digests = DigestIndex(None)
    options = BackendOptions(n_ctx=args.n_ctx)
    ref_options = BackendOptions(
        n_ctx=args.n_ctx, extra={"dtype": args.ref_dtype} if args.ref_dtype else {}
    )

    def handle(path: Path, backend: str) -> ModelHandle:
        return ModelHandle(
            path,
            registry.backend(backend),
            ref_options if backend == "hf" else options,
            digests=digests,
            instruments=instruments,
        )

    ref, sub = handle(reference, "hf"), handle(subject, "exl2")
    dataset = load_dataset(DatasetSpec(path=str(args.text), domain="en"))
    settings = EvaluationSettings(
        chunks=args.chunks, top_k=args.top_k, tail_samples=args.tail_samples
    )

    def evaluation() -> Evaluation:
        return Evaluation(
            [dataset],
            settings,
            cache=ReferenceCache(cache_dir),
            instruments=instruments,
        )

    evaluation().paired(sub, ref)  # warms the reference cache, the subject's kernels and load
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        (paired,) = evaluation().paired(sub, ref)
        seconds.append(time.perf_counter() - started)
    counters = instruments.counters
    assert counters["reference_cache_hits"] == args.repeats, counters
    ref.close()
    sub.close()
    return seconds, paired


def exllamav2_loop(
    subject: Path, chunks: np.ndarray, args: argparse.Namespace
) -> tuple[list[float], float]:
    """exllamav2 alone: its perplexity loop over the same chunks; wall times and the NLL mean."""
    import torch
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config

    config = ExLlamaV2Config(str(subject))
    config.max_seq_len = args.n_ctx
    config.max_input_len = args.n_ctx
    config.max_attention_size = args.n_ctx**2
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=args.n_ctx, lazy=True)
    model.load_autosplit(cache)
    ids = torch.from_numpy(chunks.astype(np.int64))
    first = scored_start(args.n_ctx) - 1  # logits at p predict token p + 1

    def run() -> float:
        total, count = 0.0, 0
        with torch.inference_mode():
            for row in ids:
                cache.current_seq_len = 0
                logits: Any = model.forward(row[None, :], cache).float()
                logprobs = torch.log_softmax(logits[0, first:-1], dim=-1)
                targets = row[first + 1 :].to(logprobs.device)
                total += float(logprobs.gather(-1, targets[:, None]).sum())
                count += len(targets)
        torch.cuda.synchronize()
        return -total / count

    run()  # warm-up
    seconds = []
    nll = 0.0
    for _ in range(args.repeats):
        started = time.perf_counter()
        nll = run()
        seconds.append(time.perf_counter() - started)
    model.unload()
    return seconds, nll


def scored_chunks(cache_dir: Path) -> np.ndarray:
    """The very chunks qgate scored, from the reference's cache entries (the scores and, beside
    them, the noise floor's: both hold the same tokens)."""
    found = []
    for entry in sorted(cache_dir.rglob("*.npz")):
        with np.load(entry) as stored:
            if "tokens" in stored.files:
                found.append(stored["tokens"])
    if not found or any(not np.array_equal(found[0], other) for other in found[1:]):
        sys.exit(f"expected one set of scored chunks in {cache_dir}, found {len(found)}")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subject", type=Path, required=True, help="EXL2 folder")
    parser.add_argument("--reference", type=Path, required=True, help="Hugging Face folder")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--tail-samples", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--text", type=Path, default=CORPUS, help="the text to score")
    parser.add_argument("--ref-dtype", help="the Hugging Face reference's extra.dtype")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache_dir:
        ours, paired = qgate_pass(args.subject, args.reference, Path(cache_dir), args)
        chunks = scored_chunks(Path(cache_dir))
    theirs, nll = exllamav2_loop(args.subject, chunks, args)

    ppl_qgate = float(np.exp(-paired.sub_logprob.mean()))
    ppl_exl2 = float(np.exp(nll))
    q, e = statistics.median(ours), statistics.median(theirs)
    print(
        f"{args.subject.name}: {len(chunks)} chunks x {args.n_ctx} tokens, "
        f"{len(paired.sub_logprob)} scored, median of {args.repeats}"
    )
    print(f"exllamav2 perplexity loop  {e * 1000:8.1f} ms   PPL {ppl_exl2:.4f}")
    print(f"qgate subject pass         {q * 1000:8.1f} ms   PPL {ppl_qgate:.4f}")
    print(f"ratio qgate / exllamav2    {q / e:8.2f}x  (target <= 1.2)")
    agree = abs(ppl_qgate - ppl_exl2) / ppl_exl2
    print(f"PPL relative difference    {agree:8.3%}")
    if args.json is not None:
        figures = {
            "subject": str(args.subject),
            "chunks": len(chunks),
            "scored": len(paired.sub_logprob),
            "exllamav2_seconds": theirs,
            "qgate_seconds": ours,
            "ratio": q / e,
            "ppl_exllamav2": ppl_exl2,
            "ppl_qgate": ppl_qgate,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if agree < 0.01 else 1)


if __name__ == "__main__":
    main()
