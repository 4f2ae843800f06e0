"""One long sequence: corpus text with pass keys hidden in it, and the questions at its end.

Each of ``needles`` labelled pass keys ("The pass key of the heron is 48213. ...") sits at its own
depth of the text; after the text every label is asked for once, in shuffled order, each
question followed by its answer. The answer's key tokens are scored like any other position, so
one forward pass measures both the per-position damage (at the text positions) and retrieval:
a key is retrieved when the model ranks every one of its tokens first, which is exactly what
greedy decoding would write. That makes twenty and more trials per sequence cost no more than
the scoring pass itself, where a generated answer per key cost a forward pass over the whole
context each.

Sequences are built from token pieces (text, needles, questions), so the positions of every part
are known exactly whatever the tokenizer; the reference's sequence is cached with its scores and
the subject is scored on the very same tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from qgate.backend import LoadedModel
from qgate.errors import CheckError
from qgate_checks.long_context.sequence import rotated, text_tokens

#: labels of the pass keys: one plain word each, none a prefix of another
LABELS = (  # noqa: SIM905 (a word list reads better as one string)
    "badger beaver bison camel cobra condor dingo donkey eagle egret falcon ferret finch gecko "
    "gorilla hamster heron hyena ibis iguana jackal jaguar koala lemur lion llama moose newt "
    "ocelot otter parrot puffin quail rabbit salmon toucan turtle viper walrus weasel yak zebra"
).split()
#: needles and questions may take at most this share of the context (but one key always fits
#: when it takes at most half); the rest is text
NEEDLE_SHARE = 0.25
INTRO = "\n\nAnswer each question about the pass keys in the text above.\n"


@dataclass
class Layout:
    """Where everything sits in one sequence."""

    tokens: list[int]
    text: np.ndarray  #: positions of corpus-text tokens (the candidates for per-position scores)
    keys: np.ndarray  #: int [needles, 2]: [start, end) of each answer's key tokens
    depths: np.ndarray  #: float [needles]: share of the text before each needle

    def key_positions(self) -> np.ndarray:
        spans = [np.arange(start, end) for start, end in self.keys.tolist()]
        return np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)


def layout(
    model: LoadedModel, corpora: list[str], context: int, needles: int, *, sequence: int, seed: int
) -> Layout:
    """The tokens of sequence ``sequence``: ``context`` tokens in all, BOS first where the model
    adds one. A short context holds fewer keys (see ``NEEDLE_SHARE``), possibly none."""
    rng = random.Random(f"passkey:{seed}:{sequence}")
    labels = rng.sample(LABELS, min(needles, len(LABELS)))
    keys = [str(rng.randint(10000, 99999)) for _ in labels]

    def tokens(text: str) -> list[int]:
        return model.tokenize(text, add_bos=False)

    hidden = [
        tokens(
            f" The pass key of the {label} is {key}. Remember it: the {label} has pass key {key}."
        )
        for label, key in zip(labels, keys, strict=True)
    ]
    questions = [
        tokens(f"\nWhat is the pass key of the {label}? The pass key of the {label} is")
        for label in labels
    ]
    answers = [tokens(f" {key}") for key in keys]
    intro = tokens(INTRO)
    costs = np.cumsum(
        [len(h) + len(q) + len(a) for h, q, a in zip(hidden, questions, answers, strict=True)]
    )
    count = int(np.searchsorted(costs + len(intro), NEEDLE_SHARE * context, side="right"))
    if count == 0 and len(costs) and costs[0] + len(intro) <= context // 2:
        count = 1  # a short context still asks once (a verdict on one key only warns)
    order = [i for i in rng.sample(range(len(labels)), len(labels)) if i < count]
    apparatus = int(costs[count - 1]) + len(intro) if count else 0
    bos = model.tokenize("", add_bos=True)
    text = text_tokens(model, rotated(corpora, sequence), context - len(bos) - apparatus)
    sequence_tokens = list(bos)
    text_positions: list[int] = []
    depths = np.linspace(0.05, 0.95, count) if count else np.zeros(0)
    previous = 0
    for i, cut in enumerate([int(d * len(text)) for d in depths] + [len(text)]):
        text_positions += range(len(sequence_tokens), len(sequence_tokens) + cut - previous)
        sequence_tokens += text[previous:cut]
        previous = cut
        if i < count:
            sequence_tokens += hidden[i]
    spans = np.zeros((count, 2), dtype=np.int64)
    if count:
        sequence_tokens += intro
    for i in order:
        sequence_tokens += questions[i]
        spans[i] = (len(sequence_tokens), len(sequence_tokens) + len(answers[i]))
        sequence_tokens += answers[i]
    scored_text = np.asarray([p for p in text_positions if p >= 1], dtype=np.int64)
    return Layout(sequence_tokens, scored_text, spans, np.asarray(depths, dtype=np.float64))


def retrieved(
    keys: np.ndarray, tokens: np.ndarray, positions: np.ndarray, top1: np.ndarray
) -> np.ndarray:
    """For each key span, whether the model ranked every key token first (what greedy decoding
    would write), from its top-1 ids at the scored ``positions``."""
    rank_one = dict(zip(positions.tolist(), top1.tolist(), strict=True))
    hits = np.zeros(len(keys), dtype=bool)
    for i, (start, end) in enumerate(keys.tolist()):
        span = range(start, end)
        if any(p not in rank_one for p in span):
            raise CheckError(f"the tokens of pass key {i} were not all scored")
        hits[i] = all(rank_one[p] == int(tokens[p]) for p in span)
    return hits
