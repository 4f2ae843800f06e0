"""A GGUF file's tokenizer in detail (:class:`~qgate.backend.TokenizerFacts`), from its header.

The vocabulary hash (:func:`qgate_gguf.metadata.tokenizer_hash`) says only which tokens exist.
What else decides how text becomes tokens is stored beside it: the pre-tokenizer name (which
regex splits digits and contractions), the merges, the token types, the special-token ids, and
the add-BOS/EOS/space-prefix flags. ``gguf-new-metadata --pre-tokenizer default`` changes none
of the tokens and every digit run; each of these is kept here, so a parity check can name it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qgate.backend import SpecialToken, TokenizerFacts
from qgate_gguf.reader import ArraySummary, GGUFHeader, string_items

PREFIX = "tokenizer.ggml."

#: special-token roles and the GGUF keys that name their ids
SPECIAL_KEYS = {
    "bos": "bos_token_id",
    "eos": "eos_token_id",
    "eot": "eot_token_id",
    "eom": "eom_token_id",
    "pad": "padding_token_id",
    "unk": "unknown_token_id",
    "sep": "seperator_token_id",  # sic: the key llama.cpp reads
    "mask": "mask_token_id",
}

#: flags whose keys are read into their own fields
FLAG_KEYS = {
    "add_bos": "add_bos_token",
    "add_eos": "add_eos_token",
    "add_space_prefix": "add_space_prefix",
}


def tokenizer_facts(path: Path, header: GGUFHeader) -> TokenizerFacts | None:
    """The tokenizer of the GGUF file at ``path`` whose header is ``header``; None without one."""
    fields = header.fields
    tokens = fields.get(PREFIX + "tokens")
    if not isinstance(tokens, ArraySummary):
        return None
    ids = {role: _token_id(fields.get(PREFIX + key)) for role, key in SPECIAL_KEYS.items()}
    known = [i for i in ids.values() if i is not None]
    texts = string_items(path, tokens, known)
    taken = {PREFIX + k for k in (*SPECIAL_KEYS.values(), *FLAG_KEYS.values(), "model", "pre")}
    components = {
        key.removeprefix(PREFIX): _digest(value)
        for key, value in fields.items()
        if key.startswith(PREFIX) and key not in taken
    }
    components["vocabulary"] = components.pop("tokens")
    flags = {name: _flag(fields.get(PREFIX + key)) for name, key in FLAG_KEYS.items()}
    model, pre = fields.get(PREFIX + "model"), fields.get(PREFIX + "pre")
    return TokenizerFacts(
        family="gguf",
        model=str(model) if model is not None else None,
        pre_tokenizer=str(pre) if pre is not None else None,
        components=components,
        special={role: SpecialToken(i, texts.get(i)) for role, i in ids.items() if i is not None},
        add_bos=flags["add_bos"],
        add_eos=flags["add_eos"],
        add_space_prefix=flags["add_space_prefix"],
    )


def _digest(value: Any) -> str:
    """An array by its content digest, a scalar by its value (short and readable)."""
    if isinstance(value, ArraySummary):
        return f"{value.count} items, sha256 {value.sha256[:16]}"
    text = repr(value)
    return text if len(text) <= 80 else "sha256 " + hashlib.sha256(text.encode()).hexdigest()[:16]


def _token_id(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
