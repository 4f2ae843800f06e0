"""One timed run of one model, in a process of its own: ``python -m qgate_checks.payoff.probe``.

The ``payoff`` check starts this module once per run (``REQUEST.json RESULT.json`` as
arguments), so each run's peak memory is its model's alone (nothing else is loaded in the
process) and one model's warm buffers never flatter the other. The request names the backend, the
model path, the backend options, a fixed text and the budgets; the result holds what was measured:

``load_s``         wall time of ``Backend.load``
``warmup_s``       the first forward pass (8 tokens): page faults of mmapped weights, buffers
``pp_tok_s``       prompt processing: ``prompt_tokens`` tokens in one scoring pass that asks for
                   logits at the last position only, per second
``tg_tok_s``       generation: greedy tokens per second over the whole ``generate`` call, whose
                   short prompt (``generation_prompt_tokens``, one batch) costs about one step;
                   subtracting a separately timed prompt pass only added noise
``rss_before``     resident set size just before the model was loaded (the interpreter and its
                   imports; the current size from ``/proc``, else the peak so far)
``peak_rss``       peak RSS of the whole process after the run, in bytes: ``VmHWM`` from
                   ``/proc/self/status`` on Linux, not ``getrusage``'s ``ru_maxrss``, which
                   Linux carries over from the parent through fork and exec (a child of a
                   2 GiB qgate process reports 2 GiB whatever it loads)
``gpu_peak``       ``torch.cuda.max_memory_allocated`` when the backend itself imported torch
                   and used CUDA (torch is never imported here); otherwise ``None``

A failure is written as ``{"error": "..."}`` and the process exits 1.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

#: tokens of the first (untimed-for-throughput) forward pass
WARMUP_TOKENS = 8


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes.

    Linux: ``VmHWM`` of this process's own address space (``ru_maxrss`` would include the
    parent's RSS at fork time). Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on other systems).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``); elsewhere the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def gpu_peak_bytes() -> int | None:
    """Peak CUDA memory allocated through torch, only if the backend already imported torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return int(torch.cuda.max_memory_allocated())
    except Exception:  # a broken CUDA setup must not lose the CPU figures
        return None


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Load the model named by ``request``, time its prompt processing and generation."""
    from qgate.backend import BackendOptions, GenerationSettings
    from qgate.errors import CheckError
    from qgate.plugins import Registry

    backend = Registry.from_environment().backend(request["backend"])
    options = BackendOptions(**request["options"])
    rss_before = current_rss_bytes()
    started = time.perf_counter()
    model = backend.load(Path(request["path"]), options)
    load_s = time.perf_counter() - started
    try:
        tokens = model.tokenize(request["text"], add_bos=True)
        n = min(int(request["prompt_tokens"]), model.n_ctx, len(tokens))
        if n < WARMUP_TOKENS:
            raise CheckError(f"the text gives only {n} tokens; the prompt needs {WARMUP_TOKENS}")

        started = time.perf_counter()
        model.score(tokens[:WARMUP_TOKENS], start=WARMUP_TOKENS - 1, top_k=1)
        warmup_s = time.perf_counter() - started

        started = time.perf_counter()
        model.score(tokens[:n], start=n - 1, top_k=1)
        pp_s = time.perf_counter() - started

        head = tokens[: int(request["generation_prompt_tokens"]) + 1]
        if model.bos_token is not None and head and head[0] == model.bos_token:
            head = head[1:]
        prompt = model.detokenize(head)
        settings = GenerationSettings(
            max_tokens=int(request["generation_tokens"]), temperature=0.0, seed=options.seed
        )
        started = time.perf_counter()
        generation = model.generate(prompt, settings)
        generate_s = time.perf_counter() - started
        generated = len(generation.tokens)
        return {
            "load_s": load_s,
            "warmup_s": warmup_s,
            "prompt_tokens": n,
            "pp_s": pp_s,
            "pp_tok_s": n / pp_s if pp_s > 0 else None,
            "generation_prompt_tokens": generation.prompt_tokens,
            "generated_tokens": generated,
            "finish_reason": generation.finish_reason,
            "tg_s": generate_s,
            "tg_tok_s": generated / generate_s if generated and generate_s > 0 else None,
            "rss_before": rss_before,
            "peak_rss": peak_rss_bytes(),
            "gpu_peak": gpu_peak_bytes(),
        }
    finally:
        model.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: python -m qgate_checks.payoff.probe REQUEST.json RESULT.json", file=sys.stderr
        )
        return 2
    request_path, result_path = Path(args[0]), Path(args[1])
    try:
        result = measure(json.loads(request_path.read_text()))
    except Exception as exc:  # reported to the parent, which turns it into an error result
        result_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
