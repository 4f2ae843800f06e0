"""Two tokenizations of one text compared: the probe texts, the first divergence, and a message
that shows both sequences there, with their text.

A tokenizer fault rarely shows everywhere: a wrong pre-tokenizer splits digit runs and
contractions differently and leaves plain words alone, a BOS convention moves everything by one
token. The probe texts gather the places where tokenizers are known to differ. The scoring pass
(before it compares two models token by token) and the ``tokenizer-parity`` check share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: name -> text: where tokenizers that differ anywhere usually differ
PROBE_TEXTS: dict[str, str] = {
    "digits": "In 1984, 1234567 people paid $3.14159 each; 2^64 = 18446744073709551616 (0x7F).",
    "contractions": "I'm sure they'll say we've done what you'd've done, isn't it? DON'T, it's OK.",
    "whitespace": "a  b   c\t\td\n\n\ne    \n  f \u00a0g",
    "cjk": "日本語のテキスト。中文文本，한국어 텍스트입니다。",
    "code": 'def f(x):\n    return {"a": [1, 2]} if x else None  # ok?\n\tpass\n',
    "emoji": "Great job 👍🏽🎉 naïve café, Zażółć gęślą jaźń, Съешь же ещё этих булок.",
    "special": "<s></s><|endoftext|><|im_start|>user<|im_end|><bos><eos><start_of_turn>[INST]",
}

#: tokens shown on each side of a divergence
CONTEXT_TOKENS = 4


def first_divergence(first: Sequence[int], second: Sequence[int]) -> int | None:
    """The first position where the sequences differ (the shorter one's length when one is a
    prefix of the other); None when they are equal."""
    for position, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return position
    return None if len(first) == len(second) else min(len(first), len(second))


def show_divergence(
    at: int,
    sequences: Sequence[tuple[str, Sequence[int], Callable[[Sequence[int]], str]]],
) -> str:
    """Both sequences around position ``at``: the text before it, then each side's next tokens
    as ``id 'piece'``; ``sequences`` are ``(name, ids, detokenize)``.

    ``at token 9, after ' paid $3.1', q8.gguf has [16 '4', 16 '1', ...] (40 tokens in all) and
    the reference f16.gguf has [3519 '41', ...] (38 tokens in all)``
    """
    _, ids, detokenize = sequences[0]
    before = detokenize(list(ids[max(0, at - CONTEXT_TOKENS) : at]))
    sides = []
    for name, ids, detokenize in sequences:
        window = list(ids[at : at + CONTEXT_TOKENS])
        pieces = ", ".join(f"{t} {detokenize([t])!r}" for t in window) or "nothing more"
        sides.append(f"{name} has [{pieces}] ({len(ids)} tokens in all)")
    return f"at token {at}, after {before!r}, " + " and ".join(sides)
