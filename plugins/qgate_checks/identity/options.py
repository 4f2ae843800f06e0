"""The ``identity`` check's options, as a policy names them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qgate.options import option

#: values compared per tensor by default, every k-th row: on a small model this many already
#: give the cosines of a full comparison to five decimals, at a few percent of its reading time
DEFAULT_MAX_ELEMENTS = 65_536


@dataclass
class IdentityOptions:
    claimed_source: str | None = option(
        None, "the model the subject claims to be a quant of (default: the run's reference)"
    )
    not_from: list[str] = option(
        default_factory=list,
        help="models the subject must NOT be a quant of (e.g. the base of a claimed fine-tune)",
    )
    weights: bool = option(
        True, "compare dequantized tensors (formats whose backend hands them out, e.g. GGUF)"
    )
    behaviour: Literal["always", "fallback", "never"] = option(
        "always",
        "measure the KL divergence to each candidate: always, only when the weights cannot "
        "decide (fallback: a cached reference is then never loaded for it), or never",
    )
    min_cosine: float = option(
        0.9,
        "a tensor matches the claim when its cosine similarity to it is at least this",
        minimum=-1,
        maximum=1,
    )
    min_match_share: float = option(
        0.8,
        "share of weight matrices that must match the claim (weight_match_share)",
        minimum=0,
        maximum=1,
    )
    min_closer_share: float = option(
        0.8,
        "share of the tensors (or metadata fields) that tell the claim and a not_from model "
        "apart on which the subject must be closer to the claim",
        minimum=0,
        maximum=1,
    )
    shared_tolerance: float = option(
        1e-3,
        "tensors where the claim and a not_from model differ by less than this relative error "
        "are shared by both and left out of the vote",
        minimum=0,
    )
    max_elements_per_tensor: int | None = option(
        DEFAULT_MAX_ELEMENTS,
        "values compared per tensor at most, every k-th row (null: every value)",
        minimum=1,
    )
    max_kld_ratio: float = option(
        0.5,
        "largest KLD(claim, subject) / min KLD(not_from, subject) (behaviour_kld_ratio)",
        minimum=0,
    )
    max_kld: float = option(
        1.0,
        "largest mean KLD to the claim when there is no not_from model (nats; an unrelated "
        "model of the same tokenizer is several nats away, a 2-bit quant of it < 1)",
        minimum=0,
    )
    min_metadata_match: float = option(
        0.75, "share of metadata fields that must equal the claim's", minimum=0, maximum=1
    )
    prompts: str = option("default", "a shipped prompt set's name, or a .jsonl file")
    max_prompts: int = option(16, "chat-style prompts scored per candidate at most", minimum=1)
    top_k: int = option(64, "candidate top-k kept exactly for the KLD", minimum=1)
    tail_samples: int = option(
        32, "ids sampled from the rest of the candidate's distribution (unbiased tail)", minimum=0
    )
