"""Pass-key retrieval: a number hidden at a depth of a long filler text, asked for at the end."""

from __future__ import annotations

import random
from dataclasses import dataclass

from qgate.backend import GenerationSettings, LoadedModel
from qgate.datasets import load_dataset
from qgate.errors import CheckError
from qgate.policy.model import DatasetSpec


@dataclass(frozen=True)
class Probe:
    length: int
    depth: float
    key: str


def retrieval_probes(lengths: list[int], depths: list[float], *, seed: int) -> list[Probe]:
    rng = random.Random(f"passkey:{seed}")
    return [
        Probe(length, depth, str(rng.randint(10000, 99999)))
        for length in lengths
        for depth in depths
    ]


def probe_prompt(model: LoadedModel, probe: Probe) -> str:
    """English filler with the pass key at ``probe.depth``, ``probe.length`` tokens in all."""
    needle = f" The pass key is {probe.key}. Remember it: {probe.key} is the pass key. "
    question = "\n\nWhat is the pass key? The pass key is"
    budget = probe.length - len(model.tokenize(needle + question, add_bos=True)) - 4
    if budget < 64:
        raise CheckError(
            f"a retrieval length of {probe.length} tokens leaves no room for filler text"
        )
    filler = load_dataset(DatasetSpec(name="en")).text
    while len(filler) < budget * 6:  # enough characters for ``budget`` tokens in any tokenizer
        filler += "\n\n" + filler
    # tokenize a prefix only: ~6 characters per token is more than any tokenizer needs here
    text = model.detokenize(model.tokenize(filler[: budget * 6], add_bos=False)[:budget])
    cut = int(len(text) * probe.depth)
    cut = text.rfind(" ", 0, cut) + 1 or cut
    return text[:cut] + needle + text[cut:] + question


def probe_settings() -> GenerationSettings:
    """How a pass-key probe is decoded: greedy, a few tokens, one line."""
    return GenerationSettings(max_tokens=8, stop=["\n"])


def run_probes(model: LoadedModel, probes: list[Probe]) -> list[bool]:
    hits = []
    for probe in probes:
        answer = model.generate(probe_prompt(model, probe), probe_settings())
        hits.append(probe.key in answer.text)
    return hits
