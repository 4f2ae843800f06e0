"""Metadata evidence, the weakest kind since anyone can edit it: name, basename, finetune and
``base_model.*`` fields, vocabulary size, tokenizer hash, chat template, architecture, tensor
names and shapes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qgate.backend import ModelInfo, TensorMeta

#: a model's tensor shapes by name, as its tensor reader lists them
Shapes = dict[str, tuple[int, ...]]

#: identity fields compared (plus every ``base_model.*`` field)
IDENTITY_KEYS = ("name", "basename", "finetune", "version", "size_label")
#: fields that say nothing when one side does not know them (a backend that cannot tell)
_UNKNOWN_WHEN_MISSING = {
    "architecture",
    "vocab_size",
    "tokenizer_hash",
    "tensor_names",
    "tensor_shapes",
}
#: fields that mean the same in every format
_FORMAT_NEUTRAL = {"vocab_size", "chat_template", "chat_template_hash"}


def tensor_shapes(tensors: Sequence[TensorMeta] | None) -> Shapes | None:
    return {t.name: t.shape for t in tensors} if tensors is not None else None


def metadata_facts(info: ModelInfo, shapes: Shapes | None) -> dict[str, str | None]:
    """The fields the metadata evidence compares, as printable strings (None: not known)."""
    facts: dict[str, str | None] = {
        "_format": info.format,  # not compared: a GGUF quant of an HF folder is fine
        "architecture": info.architecture,
        "vocab_size": str(info.vocab_size) if info.vocab_size is not None else None,
        "tokenizer_hash": _short(info.tokenizer_hash),
        "chat_template": "present" if info.chat_template_hash else "absent",
        "chat_template_hash": _short(info.chat_template_hash),
    }
    names = sorted(info.tensor_type_by_name)
    facts["tensor_names"] = f"{len(names)} tensors {_short(_digest(names))}" if names else None
    facts["tensor_shapes"] = (
        _short(_digest(f"{n}:{list(shapes[n])}" for n in sorted(shapes))) if shapes else None
    )
    for key in IDENTITY_KEYS:
        facts[key] = info.identity.get(key)
    for key in sorted(info.identity):
        if key.startswith("base_model."):
            facts[key] = info.identity[key]
    return facts


def field_matches(a: dict[str, str | None], b: dict[str, str | None]) -> dict[str, bool | None]:
    """Per field: equal, different, or None when it cannot be compared (unknown to one side,
    or absent from both). Across formats (a GGUF quant of a Hugging Face folder) only the
    format-neutral fields compare: each format names its architecture, tensors and model in its
    own way, and each backend digests its own tokenizer representation."""
    out: dict[str, bool | None] = {}
    for key in list(a) + [k for k in b if k not in a]:
        if key.startswith("_"):
            continue
        va, vb = a.get(key), b.get(key)
        if va is None and vb is None:
            continue
        unknown = (va is None or vb is None) and key in _UNKNOWN_WHEN_MISSING
        cross_format = a.get("_format") != b.get("_format") and key not in _FORMAT_NEUTRAL
        out[key] = None if unknown or cross_format else va == vb
    return out


@dataclass
class MetadataEvidence:
    subject: dict[str, str | None]
    candidates: list[dict[str, str | None]]
    #: per candidate: field -> equal to the subject's (None: not comparable)
    matches: list[dict[str, bool | None]]

    def match_share(self, k: int) -> float | None:
        compared = [m for m in self.matches[k].values() if m is not None]
        return sum(compared) / len(compared) if compared else None

    def match_count(self, k: int) -> str:
        compared = [m for m in self.matches[k].values() if m is not None]
        return f"{sum(compared)}/{len(compared)}"

    def closer_share(self, k: int) -> tuple[float | None, int]:
        """Among the fields where the claim (0) and candidate ``k`` differ, the share on which
        the subject equals the claim; and how many such fields there are."""
        claim, other = self.candidates[0], self.candidates[k]
        telling = [
            key
            for key, same in field_matches(claim, other).items()
            if same is False and self.matches[0].get(key) is not None
        ]
        if not telling:
            return None, 0
        closer = sum(bool(self.matches[0].get(key)) for key in telling)
        return closer / len(telling), len(telling)

    def shown_fields(self) -> list[str]:
        """Every compared field of the subject and the candidates, in first-seen order."""
        keys = [k for k in self.subject if not k.startswith("_")]
        for facts in self.candidates:
            keys += [k for k in facts if k not in keys and not k.startswith("_")]
        return keys


def gather_metadata(
    subject: ModelInfo,
    candidates: Sequence[ModelInfo],
    shapes: Sequence[Shapes | None] | None = None,
) -> MetadataEvidence:
    """Metadata of the subject and each candidate; ``shapes``: their tensor shapes, subject
    first (None where the backend hands out no tensors)."""
    infos = [subject, *candidates]
    known = list(shapes) if shapes is not None else [None] * len(infos)
    facts = [metadata_facts(i, s) for i, s in zip(infos, known, strict=True)]
    return MetadataEvidence(facts[0], facts[1:], [field_matches(facts[0], c) for c in facts[1:]])


def _short(digest: str | None) -> str | None:
    return digest[:12] if digest else None


def _digest(items: Iterable[object]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode() + b"\x00")
    return h.hexdigest()
