"""``json-output``: does the subject still answer "reply in JSON with keys ..." as the reference does?

Structured output breaks before prose does: a quant that writes fluent text may drop a brace,
a quote or a key. Both models answer the same prompts (the shipped ``json`` set: a fact and the
keys to put it under), each through its own chat template, greedy. An answer is ``ok`` when it
parses as a JSON object holding every asked key; a surrounding Markdown code fence, as chat
models write, is allowed, and so is text around a single object (what a tolerant client would
cut out). The verdict is on the drop of the ok share from the reference to the subject, with a
paired interval; the report gives each model's rates with exact intervals and the item flips.

Each prompt line carries its keys: ``{"id": ..., "kind": "instruction", "prompt": ...,
"keys": ["name", "age"]}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from qgate.backend import GenerationSettings
from qgate.check import Check, CheckContext
from qgate.datasets import jsonl_records
from qgate.errors import UsageError
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.prompts import load_prompt_set, read_prompt_source
from qgate.results import CheckResult
from qgate_checks.instructed import Judgement, answer, judge, lost_samples, rate_table

#: an answer's label
KINDS = ("ok", "missing keys", "not an object", "not JSON")
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)


@dataclass
class JsonOutputOptions:
    prompts: str = option(
        "json", "a shipped prompt set's name, or a .jsonl file whose lines carry 'keys'"
    )
    max_tokens: int = option(96, "answer budget in tokens", minimum=8)
    max_valid_drop: float | None = option(
        0.05,
        "largest drop of the share of answers that parse with every asked key, below the "
        "reference's (0.05 = 5 points)",
        minimum=0,
        maximum=1,
    )
    min_reference_share: float = option(
        0.5,
        "below this share of valid reference answers the prompts carry no signal",
        minimum=0,
        maximum=1,
    )
    samples_in_report: int = option(4, "broken answers shown in the report", minimum=0)


def parse_reply(text: str) -> Any:
    """The JSON value an answer holds: the whole answer, the inside of its first code fence, or
    the span from its first ``{`` to its last ``}``. :raises ValueError: when none parses."""
    candidates = [text.strip()]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first : last + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    raise ValueError("no JSON value in the answer")


def label(text: str, keys: tuple[str, ...]) -> str:
    """``ok``, ``missing keys``, ``not an object`` or ``not JSON`` for one answer."""
    try:
        value = parse_reply(text)
    except ValueError:
        return "not JSON"
    if not isinstance(value, dict):
        return "not an object"
    return "ok" if all(key in value for key in keys) else "missing keys"


def required_keys(name_or_path: str) -> dict[str, tuple[str, ...]]:
    """Prompt id -> the keys its answer must hold, from the set's lines (``keys``)."""
    raw, source = read_prompt_source(name_or_path)
    keys = {}
    for number, record in jsonl_records(raw, source):
        wanted = record.get("keys") if isinstance(record, dict) else None
        if (
            not isinstance(wanted, list)
            or not wanted
            or not all(isinstance(k, str) and k for k in wanted)
        ):
            raise UsageError(f"{source}:{number}: each line needs 'keys', a list of key names")
        keys[str(record.get("id") or f"line{number}")] = tuple(wanted)
    return keys


class JsonOutputCheck(Check[JsonOutputOptions]):
    name = "json-output"
    description = "share of answers that parse as JSON with the asked keys, vs the reference"
    Options = JsonOutputOptions
    needs_reference = True

    def run(self, ctx: CheckContext[JsonOutputOptions]) -> list[CheckResult]:
        options = ctx.options
        prompt_set = load_prompt_set(options.prompts)
        keys = required_keys(options.prompts)
        settings = GenerationSettings(max_tokens=options.max_tokens)
        answered = answer(ctx, prompt_set.prompts, settings, "JSON prompts")
        answered.label_with(lambda text, prompt: label(text, keys[prompt.id]))
        judgement = Judgement(
            "json_valid_drop",
            "answers that parse as JSON with every asked key",
            options.max_valid_drop,
            options.min_reference_share,
        )
        return [
            judge(
                ctx,
                answered,
                judgement,
                tables=[rate_table("JSON answers", answered, KINDS, ctx.confidence)],
                samples=lost_samples(
                    answered, options.samples_in_report, "subject {label}, reference ok"
                ),
                details={"prompt_set": prompt_set.name, "prompt_set_sha256": prompt_set.digest},
            )
        ]


@hookimpl
def qgate_checks() -> list[Check]:
    return [JsonOutputCheck()]
