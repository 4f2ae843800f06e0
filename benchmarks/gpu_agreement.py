"""qgate's figures vs each format's own tool on a CUDA GPU, on the same tokens (docs/gpu.md).

    python benchmarks/gpu_agreement.py torch --reference HF_DIR --subject exl2=DIR --subject awq=DIR
        [--subject exl2-fp16=DIR] [--subject hf-fp16=HF_DIR] [--chunks 16] [--json OUT]
    python benchmarks/gpu_agreement.py gguf --reference F16.gguf --subject Q8_0.gguf ...
        [--chunks 16] [--speed-subject Q4_K_M.gguf --speed-chunks 64] [--json OUT]

The text is qgate's corpora joined (en, code, pl, ru, ja, ar, hi), cut as llama-perplexity cuts
it: chunks of 512 tokens, BOS first where the model adds one, the second half of each scored.

``torch``: the Hugging Face reference runs in float32 through transformers. Each subject runs
through its own runtime over the very chunks qgate scored (exllamav2's forward pass, the loop of
its perplexity test; for AWQ, a plain transformers forward pass), and the full-vocabulary KL
divergence, perplexity ratio and top-1 agreement are computed from the full log-softmax of both.
qgate's figures for the same pair come from its scoring pass (the reference's top-64 plus 128
tail samples). Two kinds are runtime floors and have no qgate side: ``exl2-fp16`` is exllamav2
running an unquantized folder (is the runtime itself faithful to transformers?) and ``hf-fp16``
is transformers running the reference in float16 (the floor under an AWQ quant).

``gguf``: llama.cpp's own ``llama-perplexity --kl-divergence-base`` on the F16 GGUF, then
``--kl-divergence`` for each quant, all offloaded to the GPU (``-ngl 99``), vs qgate's GGUF
backend with every layer on the GPU against the same F16 reference. With ``--speed-subject``
it also times qgate's subject pass (reference from the cache, model loaded) against
``llama-perplexity`` on the same chunks, in its perplexity mode and in its KL divergence mode,
with the host-side reduction on one thread and on several (``extra.reduce_threads``).

Prints a table per subject and writes everything to ``--json``. Never asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
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

CORPORA = Path(__file__).parents[1] / "qgate" / "data" / "corpora"
ORDER = ("en", "code", "pl", "ru", "ja", "ar", "hi")
N_CTX = 512


def joined_text(directory: Path) -> Path:
    """qgate's corpora in one file (llama-perplexity reads one), English first."""
    path = directory / "corpora.txt"
    parts = [(CORPORA / f"{name}.txt").read_text(encoding="utf-8") for name in ORDER]
    path.write_text("\n\n".join(parts), encoding="utf-8")
    return path


class Qgate:
    """qgate's scoring passes, driven as ``qgate check`` drives them, one reference cache."""

    def __init__(self, text: Path, cache_dir: Path, chunks: int):
        self.registry = Registry.from_environment()
        self.instruments = Instruments()
        self.digests = DigestIndex(None)
        self.dataset = load_dataset(DatasetSpec(path=str(text), domain="corpora"))
        self.cache_dir = cache_dir
        self.settings = EvaluationSettings(chunks=chunks, top_k=64, tail_samples=128)

    def handle(self, path: Path, backend: str, **options: Any) -> ModelHandle:
        return ModelHandle(
            path,
            self.registry.backend(backend),
            BackendOptions(n_ctx=N_CTX, **options),
            digests=self.digests,
            instruments=self.instruments,
        )

    def evaluation(self) -> Evaluation:
        return Evaluation(
            [self.dataset],
            self.settings,
            cache=ReferenceCache(self.cache_dir),
            instruments=self.instruments,
        )

    def paired(self, subject: ModelHandle, reference: ModelHandle) -> tuple[PairedScores, float]:
        """The pair's scores and the wall time of the (whole) subject pass."""
        started = time.perf_counter()
        (paired,) = self.evaluation().paired(subject, reference)
        return paired, time.perf_counter() - started

    def tokens(self, reference: ModelHandle) -> np.ndarray:
        return self.evaluation().reference_scores(reference, self.dataset).tokens


def figures(paired: PairedScores) -> dict[str, float]:
    return {
        "ppl_reference": float(np.exp(-paired.ref_logprob.mean())),
        "ppl_subject": float(np.exp(-paired.sub_logprob.mean())),
        "ppl_ratio": float(np.exp(paired.ref_logprob.mean() - paired.sub_logprob.mean())),
        "kld_mean": float(paired.kld.mean()),
        "kld_p99": float(np.percentile(paired.kld, 99)),
        "top1": float((paired.ref_top1 == paired.sub_top1).mean()),
        "tokens": len(paired.kld),
    }


# -- torch formats: the runtimes' own forward passes ------------------------------------------


def full_logprobs(logits: Any) -> Any:
    import torch

    return torch.log_softmax(logits.float(), dim=-1)


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def own_figures(ref: list[Any], sub: list[Any], tokens: np.ndarray) -> dict[str, float]:
    """Full-vocabulary statistics from per-chunk log-softmax rows at the scored positions."""
    import torch

    first = scored_start(N_CTX)
    kld, ref_t, sub_t, agree = [], [], [], []
    for r, s, row in zip(ref, sub, tokens, strict=True):
        targets = torch.as_tensor(row[first:], dtype=torch.long, device=r.device)[:, None]
        kld.append((r.exp() * (r - s)).sum(-1).double().cpu().numpy())
        ref_t.append(r.gather(-1, targets)[:, 0].double().cpu().numpy())
        sub_t.append(s.gather(-1, targets)[:, 0].double().cpu().numpy())
        agree.append((r.argmax(-1) == s.argmax(-1)).cpu().numpy())
    k, rt, st = np.concatenate(kld), np.concatenate(ref_t), np.concatenate(sub_t)
    return {
        "ppl_reference": float(np.exp(-rt.mean())),
        "ppl_subject": float(np.exp(-st.mean())),
        "ppl_ratio": float(np.exp(rt.mean() - st.mean())),
        "kld_mean": float(k.mean()),
        "kld_p99": float(np.percentile(k, 99)),
        "top1": float(np.concatenate(agree).mean()),
        "tokens": len(k),
    }


def transformers_rows(model: Any, tokens: np.ndarray) -> tuple[list[Any], float]:
    """Log-softmax rows at the scored positions from a plain transformers forward pass."""
    import torch

    first = scored_start(N_CTX) - 1  # logits at p predict token p + 1
    out = []
    started = time.perf_counter()
    with torch.inference_mode():
        for row in tokens:
            ids = torch.as_tensor(row[None, :], dtype=torch.long, device=model.device)
            out.append(full_logprobs(model(input_ids=ids, use_cache=False).logits[0, first:-1]))
    synchronize()
    return out, time.perf_counter() - started


def exllamav2_rows(folder: Path, tokens: np.ndarray) -> tuple[list[Any], float]:
    """exllamav2's perplexity loop: forward the whole chunk with a cache, log-softmax."""
    import torch
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config

    config = ExLlamaV2Config(str(folder))
    config.max_seq_len = N_CTX
    config.max_input_len = N_CTX
    config.max_attention_size = N_CTX**2
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=N_CTX, lazy=True)
    model.load_autosplit(cache)
    first = scored_start(N_CTX) - 1
    out = []
    started = time.perf_counter()
    with torch.inference_mode():
        for row in tokens:
            cache.current_seq_len = 0
            logits = model.forward(torch.as_tensor(row[None, :], dtype=torch.long), cache)
            out.append(full_logprobs(logits[0, first:-1].to("cuda")))
    synchronize()
    seconds = time.perf_counter() - started
    model.unload()
    return out, seconds


def run_torch(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    q = Qgate(joined_text(work), work / "cache", args.chunks)
    reference = q.handle(args.reference, "hf", extra={"dtype": "float32"})
    tokens = q.tokens(reference)  # the chunks every runtime below scores
    reference.close()
    from qgate_hf import HFBackend

    started = time.perf_counter()
    ref_model = HFBackend().load(args.reference, BackendOptions(extra={"dtype": "float32"}))
    ref_rows, ref_seconds = transformers_rows(ref_model._model, tokens)  # type: ignore[attr-defined]
    ref_model.close()
    out: dict[str, Any] = {
        "reference": str(args.reference),
        "chunks": len(tokens),
        "reference_seconds": ref_seconds,
        "reference_load_and_pass_seconds": time.perf_counter() - started,
        "subjects": {},
    }
    for spec in args.subject:
        kind, _, path_text = spec.partition("=")
        path = Path(path_text)
        entry: dict[str, Any] = {"kind": kind, "path": str(path)}
        try:
            if kind in ("exl2", "exl2-fp16"):
                rows, seconds = exllamav2_rows(path, tokens)
            elif kind == "awq":
                from qgate_awq import AWQBackend

                model = AWQBackend().load(path, BackendOptions(n_ctx=N_CTX))
                rows, seconds = transformers_rows(model._model, tokens)  # type: ignore[attr-defined]
                model.close()
            elif kind == "hf-fp16":
                model = HFBackend().load(path, BackendOptions(extra={"dtype": "float16"}))
                rows, seconds = transformers_rows(model._model, tokens)  # type: ignore[attr-defined]
                model.close()
            else:
                raise SystemExit(f"unknown subject kind {kind!r}")
            entry["own"] = own_figures(ref_rows, rows, tokens)
            entry["own_seconds"] = seconds
            del rows
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if kind in ("exl2", "awq"):
                reference = q.handle(args.reference, "hf", extra={"dtype": "float32"})
                subject = q.handle(path, kind)
                paired, seconds = q.paired(subject, reference)
                subject.close()
                reference.close()
                entry["qgate"] = figures(paired)
                entry["qgate_seconds"] = seconds
        except Exception as exc:  # one broken subject must not cost the others' figures
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out["subjects"][spec] = entry
        print_entry(spec, entry)
    return out


# -- GGUF: llama-perplexity ---------------------------------------------------------------------


def llama_perplexity(binary: Path, model: Path, text: Path, chunks: int, *extra: str) -> dict:
    command = [str(binary), "-m", str(model), "-f", str(text), "-c", str(N_CTX)]
    command += ["--chunks", str(chunks), "-ngl", "99", *extra]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {run.returncode}:\n{log[-3000:]}")

    def grab(pattern: str) -> float | None:
        match = re.search(pattern, log)
        return float(match.group(1)) if match else None

    top1 = grab(r"Same top p:\s*([0-9.]+)")
    return {
        "seconds": seconds,
        "load_ms": grab(r"load time\s*=\s*([0-9.]+) ms"),
        "eval_ms": grab(r"prompt eval time\s*=\s*([0-9.]+) ms"),
        "ppl": grab(r"Final estimate: PPL = ([0-9.]+)") or grab(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"),
        "ppl_ratio": grab(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([0-9.]+)"),
        "kld_mean": grab(r"Mean\s+KLD:\s*([0-9.]+)"),
        "kld_p99": grab(r"99\.0%\s+KLD:\s*([0-9.]+)"),
        "top1": None if top1 is None else top1 / 100,
        "offloaded": grab(r"offloaded (\d+)/\d+ layers to GPU"),
    }


def run_gguf(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    binary = Path(args.llama_perplexity or "")
    if not binary.exists():
        raise SystemExit("llama-perplexity not found: --llama-perplexity PATH or $LLAMA_PERPLEXITY")
    text = joined_text(work)
    out: dict[str, Any] = {"reference": str(args.reference), "chunks": args.chunks, "subjects": {}}
    if args.subject:
        base = work / "base.kld"
        out["llama_base"] = llama_perplexity(
            binary, args.reference, text, args.chunks, "--kl-divergence-base", str(base)
        )
        out["kld_base_bytes"] = base.stat().st_size
        q = Qgate(text, work / "cache", args.chunks)
        for path in args.subject:
            out["subjects"][str(path)] = entry = gguf_subject(args, binary, q, text, base, path)
            print_entry(path.name, entry)
        base.unlink(missing_ok=True)
    if args.speed_subject is not None:
        out["speed"] = gguf_speed(args, binary, text, work)
    return out


def gguf_subject(
    args: argparse.Namespace, binary: Path, q: Qgate, text: Path, base: Path, path: Path
) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(path)}
    try:
        entry["own"] = llama_perplexity(
            binary,
            path,
            text,
            args.chunks,
            "--kl-divergence-base",
            str(base),
            "--kl-divergence",
        )
        reference = q.handle(args.reference, "gguf", gpu_layers=-1)
        subject = q.handle(path, "gguf", gpu_layers=-1)
        paired, seconds = q.paired(subject, reference)
        entry["qgate"] = figures(paired)
        entry["qgate_seconds_with_load"] = seconds
        subject.close()
        reference.close()
    except Exception as exc:  # one broken subject must not cost the others' figures
        entry["error"] = f"{type(exc).__name__}: {exc}"
    return entry


def gguf_speed(args: argparse.Namespace, binary: Path, text: Path, work: Path) -> dict[str, Any]:
    """qgate's subject pass (cached reference, model loaded) vs llama-perplexity, same chunks."""
    chunks = args.speed_chunks
    q = Qgate(text, work / "cache-speed", chunks)
    reference = q.handle(args.reference, "gguf", gpu_layers=-1)
    result: dict[str, Any] = {"subject": str(args.speed_subject), "chunks": chunks}
    for threads in (1, None):
        extra = {} if threads is None else {"reduce_threads": threads}
        subject = q.handle(args.speed_subject, "gguf", gpu_layers=-1, extra=extra)
        started = time.perf_counter()
        subject.model  # noqa: B018 - the load, timed apart from the pass
        load = time.perf_counter() - started
        q.paired(subject, reference)  # warms the reference cache and the subject's kernels
        times = [q.paired(subject, reference)[1] for _ in range(args.repeats)]
        subject.close()
        label = "reduce_threads_1" if threads == 1 else "reduce_threads_default"
        result[label] = {"load_seconds": load, "pass_seconds": times}
    reference.close()
    base = work / "speed.kld"
    llama_perplexity(binary, args.reference, text, chunks, "--kl-divergence-base", str(base))
    result["llama_perplexity_ppl"] = [
        llama_perplexity(binary, args.speed_subject, text, chunks) for _ in range(args.repeats)
    ]
    result["llama_perplexity_kld"] = [
        llama_perplexity(
            binary,
            args.speed_subject,
            text,
            chunks,
            "--kl-divergence-base",
            str(base),
            "--kl-divergence",
        )
        for _ in range(args.repeats)
    ]
    base.unlink(missing_ok=True)
    ours = statistics.median(result["reduce_threads_default"]["pass_seconds"])
    ours1 = statistics.median(result["reduce_threads_1"]["pass_seconds"])
    load = result["reduce_threads_default"]["load_seconds"]
    print(f"speed, {args.speed_subject.name}, {chunks} chunks x {N_CTX}, median of {args.repeats}:")
    print(f"  qgate subject pass              {ours:8.2f} s  (one reduce thread: {ours1:.2f} s)")
    print(f"  qgate load + pass               {load + ours:8.2f} s")
    for mode in ("ppl", "kld"):
        runs = result[f"llama_perplexity_{mode}"]
        wall = statistics.median(r["seconds"] for r in runs)
        loads = [r["load_ms"] for r in runs if r["load_ms"] is not None]
        compute = wall - (statistics.median(loads) / 1000 if loads else 0.0)
        result[f"ratio_{mode}_wall"] = (load + ours) / wall
        result[f"ratio_{mode}_without_load"] = ours / compute
        print(
            f"  llama-perplexity ({mode})        {wall:8.2f} s wall, {compute:.2f} s without its"
            f" load: ratio {(load + ours) / wall:.2f} (with loads), {ours / compute:.2f} (without)"
        )
    return result


# -- output --------------------------------------------------------------------------------------


def print_entry(name: str, entry: dict[str, Any]) -> None:
    if "error" in entry:
        print(f"{name}: ERROR {entry['error']}")
        return
    own, ours = entry.get("own", {}), entry.get("qgate")
    print(f"{name}: {own.get('tokens', '?')} scored tokens")
    print(f"  {'metric':<10} {'own tool':>12} {'qgate':>12} {'rel. diff':>10}")
    for key in ("ppl_ratio", "kld_mean", "kld_p99", "top1"):
        a = own.get(key)
        b = None if ours is None else ours.get(key)
        diff = "" if a in (None, 0) or b is None else f"{abs(b - a) / abs(a):9.2%}"
        fa = "-" if a is None else f"{a:12.5f}"
        fb = "-" if b is None else f"{b:12.5f}"
        print(f"  {key:<10} {fa:>12} {fb:>12} {diff:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    torch_parser = sub.add_parser("torch", help="EXL2 and AWQ vs their runtimes, HF reference")
    torch_parser.add_argument("--reference", type=Path, required=True)
    torch_parser.add_argument("--subject", action="append", default=[], help="KIND=PATH")
    gguf_parser = sub.add_parser("gguf", help="GGUF quants vs llama-perplexity, F16 reference")
    gguf_parser.add_argument("--reference", type=Path, required=True)
    gguf_parser.add_argument("--subject", type=Path, action="append", default=[])
    gguf_parser.add_argument(
        "--llama-perplexity", default=os.environ.get("LLAMA_PERPLEXITY"), help="the binary"
    )
    gguf_parser.add_argument("--speed-subject", type=Path)
    gguf_parser.add_argument("--speed-chunks", type=int, default=64)
    gguf_parser.add_argument("--repeats", type=int, default=3)
    for p in (torch_parser, gguf_parser):
        p.add_argument("--chunks", type=int, default=16)
        p.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        result = (run_torch if args.mode == "torch" else run_gguf)(args, Path(work))
        result["seconds"] = time.perf_counter() - started
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
