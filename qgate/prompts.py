"""Prompt sets for the generation checks: the one shipped with qgate, or the user's JSONL.

Each line is an object: ``{"id": str, "prompt": str, "kind": "continuation" | "instruction" |
"reasoning", "lang": str}``. Continuations are fed raw; instructions and reasoning prompts go
through the model's chat template when it has one (see :mod:`qgate.chat`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from qgate.datasets import jsonl_records
from qgate.errors import UsageError

KINDS = ("continuation", "instruction", "reasoning")


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt: str
    kind: str
    lang: str


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]
    digest: str


def read_prompt_source(name_or_path: str) -> tuple[str, str]:
    """The text of a shipped prompt set (by name) or of a JSONL file (by path), and its source
    as messages name it (``builtin:NAME`` or the path). :raises UsageError: when unreadable."""
    path = Path(name_or_path)
    if path.suffix == ".jsonl" or path.exists():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise UsageError(f"cannot read prompt set {path}: {exc.strerror}") from None
    resource = resources.files("qgate.data.prompts").joinpath(f"{name_or_path}.jsonl")
    if not resource.is_file():
        raise UsageError(f"no shipped prompt set named {name_or_path!r} (give a .jsonl path)")
    return resource.read_text(encoding="utf-8"), f"builtin:{name_or_path}"


def load_prompt_set(name_or_path: str = "default") -> PromptSet:
    """A shipped prompt set by name, or a JSONL file by path."""
    raw, source = read_prompt_source(name_or_path)
    prompts = []
    seen: set[str] = set()
    for number, record in jsonl_records(raw, source):
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("prompt"), str)
            or not record["prompt"]
        ):
            raise UsageError(f"{source}:{number}: each line needs a non-empty string 'prompt'")
        kind = record.get("kind", "continuation")
        if kind not in KINDS:
            raise UsageError(
                f"{source}:{number}: kind must be one of {', '.join(KINDS)}, got {kind!r}"
            )
        prompt_id = str(record.get("id") or f"line{number}")
        if prompt_id in seen:
            raise UsageError(f"{source}:{number}: duplicate prompt id {prompt_id!r}")
        seen.add(prompt_id)
        prompts.append(Prompt(prompt_id, record["prompt"], kind, str(record.get("lang", "und"))))
    if not prompts:
        raise UsageError(f"prompt set {source} is empty")
    return PromptSet(source, tuple(prompts), hashlib.sha256(raw.encode()).hexdigest())
