"""Evaluation text: the corpora shipped with qgate and the user's own files, cut into chunks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from qgate.errors import CheckError, UsageError
from qgate.policy.model import DatasetSpec

#: Built-in corpora, written for qgate: name -> what it holds.
BUILTIN_CORPORA: dict[str, str] = {
    "en": "English prose in several registers",
    "code": "source code: Python, JavaScript/TypeScript, C, Rust, SQL, shell",
    "pl": "Polish prose",
    "ja": "Japanese prose",
    "ru": "Russian prose",
    "ar": "Arabic prose",
    "hi": "Hindi prose",
}


@dataclass(frozen=True)
class Dataset:
    """Loaded evaluation text."""

    domain: str
    text: str
    digest: str  #: sha256 of the text, part of every cache key
    source: str
    chunks: int | None = None


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Read a dataset named by a policy or ``--dataset``."""
    if spec.name is not None:
        resource = resources.files("qgate.data.corpora").joinpath(f"{spec.name}.txt")
        text = resource.read_text(encoding="utf-8")
        source = f"builtin:{spec.name}"
        domain = spec.domain or spec.name
    else:
        assert spec.path is not None
        path = Path(spec.path)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read dataset {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"dataset {path} is not UTF-8 text") from None
        text = _read_jsonl(raw, path) if path.suffix == ".jsonl" else raw
        source = str(path)
        domain = spec.domain or path.stem
    if not text.strip():
        raise UsageError(f"dataset {source} is empty")
    return Dataset(domain, text, hashlib.sha256(text.encode()).hexdigest(), source, spec.chunks)


def dataset_from_path(path: str) -> DatasetSpec:
    """A ``--dataset FILE`` argument as a spec (``domain=FILE`` names the domain)."""
    domain, sep, file = path.partition("=")
    if not sep:
        domain, file = "", path
    if not Path(file).is_file():
        raise UsageError(f"dataset file not found: {file}")
    return DatasetSpec(path=str(Path(file).resolve()), domain=domain or None)


def jsonl_records(raw: str, source: object) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON Lines text; a line that is
    not JSON is a usage error naming ``source`` and the line."""
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{source}:{number}: not valid JSON: {exc.msg}") from None


def _read_jsonl(raw: str, path: Path) -> str:
    docs = []
    for number, record in jsonl_records(raw, path):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(
                f"{path}:{number}: each line must be an object with a string 'text' field"
            )
        docs.append(record["text"])
    return "\n\n".join(docs)


def scored_start(n_ctx: int) -> int:
    """llama-perplexity scores the second half of every chunk: logits from ``n_ctx // 2`` on."""
    return n_ctx // 2 + 1


def make_chunks(
    tokenize: Callable[[str], Sequence[int]],
    bos: int | None,
    dataset: Dataset,
    *,
    n_ctx: int,
    max_chunks: int,
) -> np.ndarray:
    """Cut a dataset into ``[chunks, n_ctx]`` token ids, as llama-perplexity does.

    The whole text is tokenized once, split into consecutive windows of ``n_ctx`` tokens, and
    the first token of each window is replaced by BOS (so every chunk starts a fresh context).
    """
    tokens = np.asarray(tokenize(dataset.text), dtype=np.int32)
    available = len(tokens) // n_ctx
    if available == 0:
        raise CheckError(
            f"dataset {dataset.domain!r} has {len(tokens)} tokens, fewer than one chunk of {n_ctx}"
        )
    count = min(available, max_chunks)
    chunks = tokens[: count * n_ctx].reshape(count, n_ctx).copy()
    if bos is not None:
        chunks[:, 0] = bos
    return chunks
