"""Detectors of collapsed generation: loops, degenerate text, runaway budgets, unclosed thinking.

Pure functions of an output (its text, its token ids, how it ended), so they are tested on
hand-written and property-based inputs. Each output gets one label:

``degenerate``  empty, mostly non-printable, or in another script than the prompt
``looping``     a long stretch copies itself with a fixed period (a phrase or token loop)
``unclosed``    a ``<think>``-style segment was opened and never closed
``truncated``   the token budget ran out with no end of text (for answers, not continuations)
``healthy``     none of the above
"""

from __future__ import annotations

import unicodedata
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LABELS = ("healthy", "looping", "degenerate", "truncated", "unclosed")
COLLAPSED = frozenset({"looping", "degenerate", "truncated", "unclosed"})
THINK_TAGS = (("<think>", "</think>"), ("<reasoning>", "</reasoning>"), ("<thought>", "</thought>"))

# Unicode blocks by script, for "the answer switched script" (a classic 2-bit failure)
_SCRIPTS = (
    ("latin", 0x0041, 0x024F),
    ("greek", 0x0370, 0x03FF),
    ("cyrillic", 0x0400, 0x052F),
    ("hebrew", 0x0590, 0x05FF),
    ("arabic", 0x0600, 0x06FF),
    ("devanagari", 0x0900, 0x097F),
    ("thai", 0x0E00, 0x0E7F),
    ("hangul", 0xAC00, 0xD7AF),
    ("cjk", 0x3040, 0x30FF),  # kana
    ("cjk", 0x3400, 0x9FFF),  # han
)


@dataclass(frozen=True)
class OutputStats:
    chars: int
    tokens: int
    repeated_ngram_fraction: float  #: share of token 4-grams seen earlier in the output
    distinct_1: float
    distinct_2: float
    compression_ratio: float  #: zlib size / raw size: loops compress far better than prose
    loop_chars: int  #: length of the longest stretch equal to the text one period earlier
    loop_period: int
    loop_start: int  #: character offset where that stretch starts (for highlighting)
    budget_exhausted: bool
    unclosed_think: bool
    nonprintable_fraction: float
    script: str | None
    prompt_script: str | None
    label: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def script_of(text: str) -> str | None:
    """The dominant script of the letters in ``text`` (None when there are fewer than 5)."""
    counts: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        code = ord(char)
        for name, low, high in _SCRIPTS:
            if low <= code <= high:
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    if sum(counts.values()) < 5:
        return None
    return counts.most_common(1)[0][0]


def script_share(text: str, script: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(script_of(c * 5) == script for c in letters) / len(letters)


def longest_periodic_run(text: str, max_period: int = 200) -> tuple[int, int, int]:
    """(length, period, start) of the longest stretch where ``text[i] == text[i - period]``.

    A phrase loop of period p over L characters shows as a run of L - p. Checked for every
    period up to ``max_period`` with numpy: O(n * max_period), fine for generation budgets.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = len(codes)
    best = (0, 0, 0)
    for period in range(1, min(max_period, n // 2) + 1):
        same = np.concatenate(([False], codes[period:] == codes[:-period], [False]))
        changes = np.flatnonzero(np.diff(same.astype(np.int8)))
        if len(changes) == 0:
            continue
        starts, ends = changes[::2], changes[1::2]
        lengths = ends - starts
        i = int(np.argmax(lengths))
        if lengths[i] > best[0]:
            # the loop spans text[start : start + period + length]: the original and its copies
            best = (int(lengths[i]), period, int(starts[i]))
    return best


def is_loop(run: int, period: int, length: int) -> bool:
    """A periodic stretch is a loop when the phrase comes back at least twice more, spans at
    least 12 characters (a CJK phrase is short) and covers a quarter of the output."""
    return period > 0 and run >= max(2 * period, 12) and run + period >= length / 4


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def unclosed_think(text: str, prompt: str = "") -> bool:
    """A reasoning segment opened (in the prompt or the output) and never closed in the output."""
    whole = prompt + text
    for open_tag, close_tag in THINK_TAGS:
        last_open = whole.rfind(open_tag)
        if last_open >= 0 and whole.find(close_tag, last_open) < 0:
            return True
    return False


def analyse(
    text: str,
    tokens: list[int],
    *,
    finish_reason: str,
    prompt: str = "",
    kind: str = "continuation",
) -> OutputStats:
    """Measure one output and give it a label (see the module docstring)."""
    raw = text.encode("utf-8")
    grams = _ngrams(tokens, 4)
    repeated = 1 - len(set(grams)) / len(grams) if grams else 0.0
    distinct_1 = len(set(tokens)) / len(tokens) if tokens else 1.0
    bigrams = _ngrams(tokens, 2)
    distinct_2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    compression = len(zlib.compress(raw, 9)) / len(raw) if len(raw) >= 64 else 1.0
    loop_chars, loop_period, loop_start = longest_periodic_run(text)
    visible = [c for c in text if not c.isspace()]
    nonprintable = (
        sum(1 for c in visible if unicodedata.category(c)[0] == "C" or c == "\ufffd") / len(visible)
        if visible
        else 0.0
    )
    prompt_script = script_of(prompt)
    script = script_of(text)
    budget_exhausted = finish_reason == "length"
    think = unclosed_think(text, prompt)

    wrong_script = (
        prompt_script is not None
        and script is not None
        and script != prompt_script
        and script_share(text, prompt_script) < 0.3
        and prompt_script != "latin"  # Latin-script prompts may be answered with code or names
    )
    if not visible or nonprintable > 0.3 or wrong_script:
        label = "degenerate"
    elif is_loop(loop_chars, loop_period, len(text)) or (len(grams) >= 16 and repeated > 0.5):
        label = "looping"
    elif think:
        label = "unclosed"
    elif budget_exhausted and kind != "continuation":
        label = "truncated"
    else:
        label = "healthy"
    return OutputStats(
        chars=len(text),
        tokens=len(tokens),
        repeated_ngram_fraction=round(repeated, 4),
        distinct_1=round(distinct_1, 4),
        distinct_2=round(distinct_2, 4),
        compression_ratio=round(compression, 4),
        loop_chars=loop_chars,
        loop_period=loop_period,
        loop_start=loop_start,
        budget_exhausted=budget_exhausted,
        unclosed_think=think,
        nonprintable_fraction=round(nonprintable, 4),
        script=script,
        prompt_script=prompt_script,
        label=label,
    )
