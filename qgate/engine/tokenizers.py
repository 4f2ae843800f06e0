"""Refusing to compare models whose tokenizers differ: per-token statistics would be meaningless."""

from __future__ import annotations

import numpy as np

from qgate.backend import ModelInfo
from qgate.datasets import Dataset, make_chunks
from qgate.engine.reference import ReferenceScores
from qgate.errors import BackendError, CheckError
from qgate.handle import ModelHandle


def check_tokenizers(subject: ModelHandle, reference: ModelHandle) -> None:
    """Refuse to compare models whose tokenizers differ: per-token statistics would be meaningless."""
    a, b = subject.info, reference.info
    if a.vocab_size and b.vocab_size and a.vocab_size != b.vocab_size:
        raise BackendError(
            f"tokenizers differ: {a.label} has {a.vocab_size} tokens, the reference {b.label} has "
            f"{b.vocab_size}; comparing distributions across vocabularies is meaningless"
        )
    if (
        a.tokenizer_hash
        and b.tokenizer_hash
        and tokenizer_family(a) == tokenizer_family(b)
        and a.tokenizer_hash != b.tokenizer_hash
    ):
        raise BackendError(
            f"tokenizers differ: {a.label} and the reference {b.label} have different token "
            "vocabularies (tokenizer hashes differ); comparing them per token is meaningless"
        )
    if tokenizer_family(a) != tokenizer_family(b) and subject.loaded and reference.loaded:
        probe_tokenizers(subject, reference)
    if (
        not isinstance(subject.options.n_ctx, int)
        or subject.options.n_ctx != reference.options.n_ctx
    ):
        raise CheckError("subject and reference must be scored with the same context size")


#: text with Latin, Cyrillic, CJK, digits, code and odd spacing: tokenizers that differ anywhere
#: usually differ here
TOKENIZER_PROBE = (
    "The quick brown fox, 1234567 times:\n\tdef f(x): return x**2  # ok?\n"
    'Zażółć gęślą jaźń. Съешь же ещё этих булок. 日本語のテキスト。 <s></s> {"a": [1, 2]}'
)


def tokenizer_family(info: ModelInfo) -> str:
    """How a format hashes its vocabulary: hashes compare only within one family (a GGUF's
    vocabulary and a Hugging Face ``tokenizer.json`` are hashed differently)."""
    return str(info.extra.get("tokenizer_family") or info.format)


def probe_tokenizers(subject: ModelHandle, reference: ModelHandle) -> None:
    """Both loaded models must split a probe text into the same token ids."""
    a = subject.model.tokenize(TOKENIZER_PROBE, add_bos=True)
    b = reference.model.tokenize(TOKENIZER_PROBE, add_bos=True)
    if a != b:
        pairs = enumerate(zip(a, b, strict=False))
        at = next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))
        raise BackendError(
            f"tokenizers differ: {subject.info.label} and the reference {reference.info.label} "
            f"turn the same probe text into different token sequences ({len(a)} vs {len(b)} "
            f"tokens, first difference at token {at}); comparing them per token is meaningless"
        )


def check_token_sequences(
    subject: ModelHandle, reference: ModelHandle, ref: ReferenceScores, dataset: Dataset
) -> None:
    """The subject's tokenization of ``dataset`` must give the reference's chunks exactly."""
    model = subject.model
    count, n_ctx = ref.tokens.shape
    try:
        mine = make_chunks(
            lambda text: model.tokenize(text, add_bos=True),
            model.bos_token,
            dataset,
            n_ctx=n_ctx,
            max_chunks=count,
        )
    except CheckError:
        mine = np.zeros((0, n_ctx), dtype=np.int32)
    if mine.shape != ref.tokens.shape or not np.array_equal(mine, ref.tokens):
        where = ""
        if mine.shape == ref.tokens.shape:
            chunk, pos = (int(v[0]) for v in np.nonzero(mine != ref.tokens))
            where = (
                f" (first difference in chunk {chunk} at token {pos}: "
                f"{int(mine[chunk, pos])} vs {int(ref.tokens[chunk, pos])})"
            )
        raise BackendError(
            f"tokenizers differ: {subject.info.label} and the reference {reference.info.label} "
            f"tokenize the {dataset.domain!r} text into different token sequences{where}; "
            "comparing them per token is meaningless"
        )


def check_vocabulary(
    subject: ModelHandle, reference: ModelHandle, ref: ReferenceScores, dataset: Dataset
) -> None:
    if tokenizer_family(subject.info) != tokenizer_family(reference.info):
        # vocabulary hashes of different formats do not compare: compare the very token
        # sequences that are scored instead (the subject tokenizes the same text)
        check_token_sequences(subject, reference, ref, dataset)
    model = subject.model
    if int(ref.top_ids.max()) >= model.n_vocab:
        raise BackendError(
            f"{subject.info.label} has {model.n_vocab} tokens but the reference uses ids up to "
            f"{int(ref.top_ids.max())}: the vocabularies differ, so the KL divergence is meaningless"
        )
