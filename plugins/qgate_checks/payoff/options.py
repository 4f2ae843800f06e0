"""The ``payoff`` check's options: the floors on the ratios, and how the timing runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qgate.options import option


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
