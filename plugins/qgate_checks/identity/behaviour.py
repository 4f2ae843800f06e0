"""Behaviour evidence: the mean KL divergence of each candidate's next-token distributions to the
subject's, on chat-style prompts (the shipped prompt set, formatted with the claimed source's
chat template: the input the claimed model is meant to see)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qgate.backend import LoadedModel
from qgate.chat import format_prompt
from qgate.check import CheckContext
from qgate.errors import CheckError, QgateError
from qgate.prompts import load_prompt_set
from qgate.scoring.kld import kld_estimate
from qgate_checks.identity.candidates import Candidate
from qgate_checks.identity.options import IdentityOptions

#: per prompt: (KLD summed over its tokens, scored tokens), or why a candidate cannot be compared
PerPrompt = tuple[np.ndarray, np.ndarray] | str


@dataclass
class BehaviourEvidence:
    prompts: int
    tokens: int
    template_note: str
    #: per candidate: (KLD sum per prompt, scored tokens per prompt), or the reason it is missing
    per_candidate: list[PerPrompt]
    seconds: float

    def mean(self, k: int, idx: np.ndarray | None = None) -> float | None:
        entry = self.per_candidate[k]
        if isinstance(entry, str):
            return None
        sums, counts = entry
        if idx is not None:
            sums, counts = sums[idx], counts[idx]
        total = float(counts.sum())
        return max(float(sums.sum()) / total, 0.0) if total else None

    def ratio(self, idx: np.ndarray | None = None) -> float | None:
        """KLD to the claim over the smallest KLD to a comparable not_from model."""
        claim = self.mean(0, idx)
        others = [self.mean(k, idx) for k in range(1, len(self.per_candidate))]
        known = [o for o in others if o is not None]
        if claim is None or not known:
            return None
        nearest = min(known)
        if nearest <= 0:
            return math.inf if claim > 0 else 1.0
        return claim / nearest


def measure_behaviour(
    ctx: CheckContext[IdentityOptions], candidates: Sequence[Candidate]
) -> BehaviourEvidence:
    options = ctx.options
    started = time.perf_counter()
    prompt_set = load_prompt_set(options.prompts)
    chat = [p for p in prompt_set.prompts if p.kind != "continuation"] or list(prompt_set.prompts)
    chat = chat[: options.max_prompts]
    template = candidates[0].info.chat_template
    rendered = [format_prompt(template, p.prompt, kind=p.kind) for p in chat]
    note = next((r.note for r in rendered if r.note), "")
    subject = ctx.subject.model
    sequences = [(r.text, subject.tokenize(r.text)) for r in rendered]
    per_candidate: list[PerPrompt] = []
    for number, cand in enumerate(candidates, 1):
        ctx.update("identity: behaviour", number - 1, len(candidates), cand.label)
        model, owned = _load(ctx, cand)
        try:
            per_candidate.append(_kld_to(subject, model, sequences, options))
        finally:
            if owned:
                model.close()
    ctx.update("identity: behaviour", len(candidates), len(candidates))
    return BehaviourEvidence(
        prompts=len(sequences),
        tokens=sum(max(min(len(t), subject.n_ctx) - 1, 0) for _, t in sequences),
        template_note=note,
        per_candidate=per_candidate,
        seconds=time.perf_counter() - started,
    )


def _load(ctx: CheckContext[IdentityOptions], cand: Candidate) -> tuple[LoadedModel, bool]:
    """The candidate's model, and whether it is ours to close (the run's reference is not)."""
    if cand.handle is not None:
        return cand.handle.model, False
    ctx.log(f"identity: loading the {cand.role} model {cand.path.name}")
    try:
        return cand.backend.load(cand.path, ctx.subject.options), True
    except QgateError as exc:
        raise CheckError(f"cannot load the {cand.role} model: {exc}") from None


def _kld_to(
    subject: LoadedModel,
    model: LoadedModel,
    sequences: Sequence[tuple[str, list[int]]],
    options: IdentityOptions,
) -> PerPrompt:
    """KL(candidate || subject) per prompt (sum, count), or why it cannot be measured."""
    if model.n_vocab != subject.n_vocab:
        return f"different vocabulary ({model.n_vocab} vs the subject's {subject.n_vocab} tokens)"
    limit = min(subject.n_ctx, model.n_ctx)
    sums = np.zeros(len(sequences))
    counts = np.zeros(len(sequences))
    for index, (text, tokens) in enumerate(sequences):
        if model.tokenize(text) != tokens:
            return "its tokenizer splits the prompts differently from the subject's"
        tokens = tokens[:limit]
        if len(tokens) < 2:
            continue
        ref = model.score(tokens, start=1, top_k=options.top_k, tail_samples=options.tail_samples)
        gather = ref.top_ids
        if ref.tail_ids is not None:
            gather = np.concatenate([ref.top_ids, ref.tail_ids], axis=1)
        sub = subject.score(tokens, start=1, top_k=1, gather=gather)
        if sub.gathered_logprobs is None:
            raise CheckError("the subject's backend returned no gathered log-probabilities")
        k = ref.top_ids.shape[1]
        kld = kld_estimate(
            ref.top_logprobs,
            sub.gathered_logprobs[:, :k],
            ref.tail_logprobs,
            sub.gathered_logprobs[:, k:] if ref.tail_logprobs is not None else None,
        )
        sums[index] = float(kld.sum())
        counts[index] = len(kld)
    if not counts.any():
        return "no prompt has two tokens"
    return sums, counts
