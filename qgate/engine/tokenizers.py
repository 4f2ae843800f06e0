"""Refusing to compare models whose tokenizers differ: per-token statistics would be meaningless.

Two checks guard the scoring pass. Before it, the vocabularies must agree (size, and the hash
where two artifacts store their vocabulary the same way), and two models of different formats,
both loaded, must tokenize a probe text alike. During it, the subject tokenizes every evaluation
text with its own tokenizer, and the chunks must equal the reference's token for token, whatever
the formats: a GGUF quant with the right vocabulary and the wrong pre-tokenizer has the same
hash and other tokens. A refusal shows both sequences where they first differ, with their text.
"""

from __future__ import annotations

import numpy as np

from qgate.backend import ModelInfo
from qgate.datasets import Dataset, make_chunks
from qgate.engine.reference import ReferenceScores
from qgate.errors import BackendError, CheckError
from qgate.handle import ModelHandle
from qgate.token_diff import PROBE_TEXTS, first_divergence, show_divergence


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
TOKENIZER_PROBE = "\n".join(PROBE_TEXTS.values())


def tokenizer_family(info: ModelInfo) -> str:
    """How a format hashes its vocabulary: hashes compare only within one family (a GGUF's
    vocabulary and a Hugging Face ``tokenizer.json`` are hashed differently)."""
    return str(info.extra.get("tokenizer_family") or info.format)


def probe_tokenizers(subject: ModelHandle, reference: ModelHandle) -> None:
    """Both loaded models must split a probe text into the same token ids (each with its own
    special tokens, as its flags say)."""
    a = subject.model.tokenize(TOKENIZER_PROBE, add_bos=True)
    b = reference.model.tokenize(TOKENIZER_PROBE, add_bos=True)
    at = first_divergence(a, b)
    if at is not None:
        shown = show_divergence(
            at,
            [
                (subject.info.label, a, subject.model.detokenize),
                (f"the reference {reference.info.label}", b, reference.model.detokenize),
            ],
        )
        raise BackendError(
            f"tokenizers differ: {subject.info.label} and the reference {reference.info.label} "
            f"turn the same probe text into different token sequences: {shown}; comparing them "
            "per token is meaningless"
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
    if mine.shape == ref.tokens.shape and np.array_equal(mine, ref.tokens):
        return
    where = ""
    if len(mine):
        chunk = next(
            (c for c in range(min(len(mine), count)) if not np.array_equal(mine[c], ref.tokens[c])),
            0,
        )
        ours, theirs = mine[chunk].tolist(), ref.tokens[chunk].tolist()
        at = first_divergence(ours, theirs) or 0
        shown = show_divergence(
            at,
            [
                (subject.info.label, ours, model.detokenize),
                (f"the reference {reference.info.label}", theirs, model.detokenize),
            ],
        )
        where = f" (first difference in chunk {chunk} {shown})"
    else:
        where = f" (the subject's tokens fill no chunk of {n_ctx}; the reference's fill {count})"
    raise BackendError(
        f"tokenizers differ: {subject.info.label} and the reference {reference.info.label} "
        f"tokenize the {dataset.domain!r} text into different token sequences{where}; "
        "comparing them per token is meaningless"
    )


def check_vocabulary(
    subject: ModelHandle, reference: ModelHandle, ref: ReferenceScores, dataset: Dataset
) -> None:
    """Before a subject is scored on ``dataset``: its own tokenization must give the reference's
    chunks (within a format as across formats: a vocabulary hash misses the pre-tokenizer, the
    merges and the BOS flags), and the reference's ids must exist in its vocabulary."""
    check_token_sequences(subject, reference, ref, dataset)
    model = subject.model
    if int(ref.top_ids.max()) >= model.n_vocab:
        raise BackendError(
            f"{subject.info.label} has {model.n_vocab} tokens but the reference uses ids up to "
            f"{int(ref.top_ids.max())}: the vocabularies differ, so the KL divergence is meaningless"
        )
