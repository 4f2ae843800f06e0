"""The tokenizer files of a model folder, read as data: the vocabulary and the chat template.

No tokenizer is built here (that needs transformers, :mod:`qgate_transformers.tokenizer`):
``qgate inspect`` and the static checks hash the vocabulary and the template from the files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qgate.errors import BackendError
from qgate_transformers.jsonfile import load_json, shown

#: the tokenizer family every Hugging Face folder shares (``tokenizer.json``), so hashes of an
#: hf reference and an exl2 or awq subject compare; a GGUF vocabulary is hashed differently
TOKENIZER_FAMILY = "huggingface"

#: token ids of ``tokenizer.json`` must be below this (real vocabularies have up to ~10^6)
MAX_TOKEN_ID = 1 << 24


def load_tokenizer_json(path: Path) -> Any:
    """The folder's ``tokenizer.json``, parsed; None when there is none."""
    file = path / "tokenizer.json"
    return load_json(file) if file.is_file() else None


def tokenizer_vocab(path: Path, data: Any = None) -> list[str] | None:
    """The tokenizer's tokens in id order, from ``tokenizer.json`` (model vocab + added tokens).

    :param data: the parsed ``tokenizer.json`` when the caller has it (it can be megabytes).
    """
    file = path / "tokenizer.json"
    if data is None:
        data = load_tokenizer_json(path)
        if data is None:
            return None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(model, (dict, type(None))):
        raise BackendError(f"{file}: not a tokenizers file (expected an object with a 'model')")
    by_id: dict[int, str] = {}
    vocab = (model or {}).get("vocab")
    if isinstance(vocab, dict):
        by_id.update({_token_id(i, file): str(t) for t, i in vocab.items()})
    elif isinstance(vocab, list):  # unigram: [[piece, score], ...]
        for i, item in enumerate(vocab):
            if not isinstance(item, list) or not item:
                raise BackendError(f"{file}: model.vocab[{i}]: expected [piece, score]")
            by_id[i] = str(item[0])
    added_tokens = data.get("added_tokens") or []
    for added in added_tokens if isinstance(added_tokens, list) else []:
        if isinstance(added, dict) and "id" in added:
            by_id[_token_id(added["id"], file)] = str(added.get("content", ""))
    if not by_id:
        return None
    return [by_id.get(i, "") for i in range(max(by_id) + 1)]


def _token_id(value: Any, file: Path) -> int:
    """A token id of ``tokenizer.json``: the vocabulary list is as long as the largest id, so a
    hostile id of 10^15 would allocate (or hash) 10^15 entries."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_TOKEN_ID:
        raise BackendError(
            f"{file}: token id {shown(value)} is not a whole number from 0 to {MAX_TOKEN_ID - 1}"
        )
    return value


def tokenizer_hash(tokens: list[str] | None) -> str | None:
    """A digest of the tokenizer family and the vocabulary (tokens in id order)."""
    if tokens is None:
        return None
    digest = hashlib.sha256(TOKENIZER_FAMILY.encode())
    for token in tokens:
        digest.update(b"\x00" + token.encode("utf-8", errors="surrogatepass"))
    return digest.hexdigest()


def chat_template(path: Path, tokenizer_config: dict[str, Any]) -> str | None:
    """The folder's chat template: ``tokenizer_config.json``'s (its ``default`` entry when it
    names several), else ``chat_template.jinja``'s."""
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {str(t.get("name")): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return template
    file = path / "chat_template.jinja"
    if not file.is_file():
        return None
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BackendError(f"{file}: not UTF-8 text: {exc}") from None
