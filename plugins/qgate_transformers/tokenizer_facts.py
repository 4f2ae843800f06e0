"""A model folder's tokenizer in detail (:class:`~qgate.backend.TokenizerFacts`), read as data.

``tokenizer.json`` holds the algorithm, the vocabulary, the merges, the normalizer, the
pre-tokenizer (the regex that splits digits and contractions) and the post-processor (which
adds BOS); ``tokenizer_config.json`` names the special tokens and may set ``add_bos_token``;
``config.json`` names special ids when the tokenizer files do not. Each part is digested
separately so that a parity check can say which one differs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from qgate.backend import SpecialToken, TokenizerFacts
from qgate_transformers.tokenizer_files import TOKENIZER_FAMILY, tokenizer_hash

#: parts of ``tokenizer.json`` digested one by one
_PARTS = ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens")
#: special-token roles: tokenizer_config.json's key, config.json's id key
_ROLES = {
    "bos": ("bos_token", "bos_token_id"),
    "eos": ("eos_token", "eos_token_id"),
    "pad": ("pad_token", "pad_token_id"),
    "unk": ("unk_token", None),
}


def tokenizer_facts(
    data: Any,
    tokens: list[str] | None,
    tokenizer_config: dict[str, Any],
    config: dict[str, Any],
) -> TokenizerFacts | None:
    """The facts of a folder whose ``tokenizer.json`` parsed to ``data`` (tokens in id order:
    ``tokens``); None when the folder has no ``tokenizer.json``."""
    if not isinstance(data, dict):
        return None
    found = data.get("model")
    model: dict[str, Any] = found if isinstance(found, dict) else {}
    components = {part: _digest(data.get(part)) for part in _PARTS if data.get(part) is not None}
    components["vocabulary"] = tokenizer_hash(tokens) or "none"
    if model.get("merges") is not None:
        components["merges"] = _digest(model.get("merges"))
    options = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
    components["model_options"] = _digest(options)
    special = _special_tokens(tokens, tokenizer_config, config)
    prefix, suffix = _template_affixes(data.get("post_processor"))
    add_bos = tokenizer_config.get("add_bos_token")
    add_eos = tokenizer_config.get("add_eos_token")
    space = tokenizer_config.get("add_prefix_space")
    return TokenizerFacts(
        family=TOKENIZER_FAMILY,
        model=str(model.get("type")) if model.get("type") else None,
        pre_tokenizer=_describe(data.get("pre_tokenizer")),
        components=components,
        special=special,
        add_bos=add_bos if isinstance(add_bos, bool) else prefix,
        add_eos=add_eos if isinstance(add_eos, bool) else suffix,
        add_space_prefix=space if isinstance(space, bool) else _space_prefix(data),
    )


def _special_tokens(
    tokens: list[str] | None, tokenizer_config: dict[str, Any], config: dict[str, Any]
) -> dict[str, SpecialToken]:
    ids = {text: i for i, text in enumerate(tokens or [])}
    found: dict[str, SpecialToken] = {}
    for role, (text_key, id_key) in _ROLES.items():
        text = _token_text(tokenizer_config.get(text_key))
        if text is not None:
            found[role] = SpecialToken(ids.get(text), text)
            continue
        token_id = config.get(id_key) if id_key else None
        if isinstance(token_id, list) and token_id:
            token_id = token_id[0]
        if isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0:
            text = tokens[token_id] if tokens is not None and token_id < len(tokens) else None
            found[role] = SpecialToken(token_id, text)
    return found


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template_affixes(processor: Any) -> tuple[bool | None, bool | None]:
    """Whether the post-processor puts a special token before / after a single text; None
    when there is no template to tell."""
    if not isinstance(processor, dict):
        return None, None
    if processor.get("type") == "Sequence":
        for inner in processor.get("processors") or []:
            found = _template_affixes(inner)
            if found != (None, None):
                return found
        return None, None
    single = processor.get("single")
    if processor.get("type") != "TemplateProcessing" or not isinstance(single, list) or not single:
        return None, None

    def special(item: Any) -> bool:
        return isinstance(item, dict) and "SpecialToken" in item

    return special(single[0]), special(single[-1])


def _space_prefix(data: dict[str, Any]) -> bool | None:
    """Whether a space is put before the text (SentencePiece's ``▁``), from the pre-tokenizer
    or the normalizer."""
    for part in (data.get("pre_tokenizer"), data.get("normalizer")):
        for item in _flatten(part):
            if item.get("type") == "Metaspace":
                return item.get("prepend_scheme", "always") != "never"
            if item.get("type") == "ByteLevel" and isinstance(item.get("add_prefix_space"), bool):
                return bool(item["add_prefix_space"])
            if item.get("type") == "Prepend":
                return True
    return None


def _flatten(part: Any) -> list[dict[str, Any]]:
    if not isinstance(part, dict):
        return []
    inner = part.get("pretokenizers") or part.get("normalizers")
    if isinstance(inner, list):
        return [item for sub in inner for item in _flatten(sub)]
    return [part]


def _describe(part: Any) -> str | None:
    """A pre-tokenizer in a few words: its types in order (``Split+ByteLevel``)."""
    items = _flatten(part)
    return "+".join(str(item.get("type")) for item in items) if items else None


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "sha256 " + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
