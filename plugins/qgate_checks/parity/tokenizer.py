"""``tokenizer-parity``: does the subject turn text into the reference's tokens?

The scoring pass already refuses a subject whose tokens differ on the evaluation text; this
check says why, and looks where evaluation text rarely goes. Two results:

- ``probe_mismatches``: the subject tokenizes probe texts (digit runs, contractions, whitespace
  runs, CJK, code, emoji, special-token text; :data:`qgate.token_diff.PROBE_TEXTS`) with its
  own tokenizer and its own BOS convention; each must give the reference's tokens, and the first
  divergence is shown with the text around it. The reference's tokens are cached, so a second
  run does not load it.
- ``fingerprint_differences``: the stored tokenizers compared part by part (pre-tokenizer,
  merges, token types, vocabulary, special-token ids and texts, add-BOS/EOS/space-prefix flags).
  Digests compare only within one format; across formats only the flags do, and the probe
  decides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from qgate.backend import TokenizerFacts
from qgate.cache import Entry, backend_material
from qgate.cached_outputs import Field, check_arrays
from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison
from qgate.token_diff import PROBE_TEXTS, first_divergence, show_divergence
from qgate_checks.parity.differences import Difference, listed, table

#: flags that mean the same in every format, so they compare across formats
SHARED_FLAGS = ("add_bos", "add_eos")


@dataclass
class TokenizerParityOptions:
    compare_fingerprint: bool = option(
        True,
        "fail on any difference in the stored tokenizer (pre-tokenizer, merges, token types, "
        "special tokens, flags), not only on the probe texts' tokens",
    )


class TokenizerParityCheck(Check[TokenizerParityOptions]):
    name = "tokenizer-parity"
    description = "the subject's own tokenizer gives the reference's tokens; stored tokenizer parts"
    Options = TokenizerParityOptions
    needs_reference = True

    def run(self, ctx: CheckContext[TokenizerParityOptions]) -> list[CheckResult]:
        assert ctx.reference is not None
        mismatches = probe_mismatches(ctx)
        differences, note = fingerprint_differences(
            ctx.subject.info.tokenizer, ctx.reference.info.tokenizer
        )
        if mismatches:
            first, shown_at = next(iter(mismatches.items()))
            message = (
                f"{len(mismatches)} of {len(PROBE_TEXTS)} probe texts tokenize differently "
                f"({', '.join(mismatches)}); {first}: {shown_at}"
            )
            if differences:
                message += f"; the stored tokenizers differ: {listed(differences, 2)}"
        else:
            message = (
                f"all {len(PROBE_TEXTS)} probe texts ({', '.join(PROBE_TEXTS)}) give the "
                "reference's tokens"
            )
        probe = ctx.result(
            "probe_mismatches",
            len(mismatches),
            threshold=0,
            comparison=Comparison.LE,
            message=message,
            details={"mismatches": mismatches},
        )
        stored = ctx.result(
            "fingerprint_differences",
            len(differences),
            threshold=0 if ctx.options.compare_fingerprint else None,
            comparison=Comparison.LE,
            message=(listed(differences) if differences else "the stored tokenizers agree")
            + (f" ({note})" if note else ""),
            tables=[table("Tokenizer differences", differences)] if differences else None,
            details={
                "differences": [asdict(d) for d in differences],
                "fingerprints": fingerprints(ctx),
            },
        )
        return [probe, stored]


def fingerprints(ctx: CheckContext[TokenizerParityOptions]) -> dict[str, str | None]:
    """Each side's tokenizer fingerprint (one digest of every stored part and flag), for a
    reader who compares runs; None where the backend reports no tokenizer details."""
    assert ctx.reference is not None
    return {
        role: facts.fingerprint if facts is not None else None
        for role, facts in (
            ("subject", ctx.subject.info.tokenizer),
            ("reference", ctx.reference.info.tokenizer),
        )
    }


def probe_mismatches(ctx: CheckContext[TokenizerParityOptions]) -> dict[str, str]:
    """Probe name -> where the subject's tokens first leave the reference's, for each probe
    text the two tokenize differently."""
    reference = reference_tokens(ctx)
    model = ctx.subject.model
    label = ctx.subject.info.label
    found = {}
    for name, text in PROBE_TEXTS.items():
        mine = model.tokenize(text, add_bos=True)
        theirs = reference[name].tolist()
        at = first_divergence(mine, theirs)
        if at is not None:
            sides = [(label, mine, model.detokenize), ("the reference", theirs, model.detokenize)]
            found[name] = show_divergence(at, sides)
    return found


def reference_tokens(ctx: CheckContext[TokenizerParityOptions]) -> dict[str, np.ndarray]:
    """The reference's tokens of every probe text, from the verified cache or its tokenizer."""
    reference = ctx.reference
    assert reference is not None
    texts = json.dumps(PROBE_TEXTS, sort_keys=True).encode()
    entry = Entry.of(
        "tokenizer-probe",
        model=reference.digest,
        texts=hashlib.sha256(texts).hexdigest(),
        **backend_material(reference.backend.name, reference.options),
    )
    fields = {name: Field("int", (None,), "ids") for name in PROBE_TEXTS}

    def compute() -> dict[str, np.ndarray]:
        return {
            name: np.asarray(reference.model.tokenize(text, add_bos=True), dtype=np.int64)
            for name, text in PROBE_TEXTS.items()
        }

    def validate(arrays: dict[str, np.ndarray]) -> str | None:
        return check_arrays(arrays, fields, vocab=reference.info.vocab_size)[0]

    return ctx.reference_outputs(entry, compute, validate=validate)


def fingerprint_differences(
    subject: TokenizerFacts | None, reference: TokenizerFacts | None
) -> tuple[list[Difference], str]:
    """Every stored part in which the tokenizers differ, and a note on what could not be
    compared."""
    if subject is None or reference is None:
        return [], "a backend reports no tokenizer details: only the probe compared"
    flags = [
        Difference(flag, getattr(subject, flag), getattr(reference, flag))
        for flag in ("add_bos", "add_eos", "add_space_prefix")
        if None not in (getattr(subject, flag), getattr(reference, flag))
        and getattr(subject, flag) != getattr(reference, flag)
    ]
    if subject.family != reference.family:
        shared = [d for d in flags if d.what in SHARED_FLAGS]
        return shared, (
            f"{subject.family} and {reference.family} store tokenizers differently: "
            "the flags compared, and the probe decides"
        )
    found = [
        Difference(what, getattr(subject, what), getattr(reference, what))
        for what in ("model", "pre_tokenizer")
        if getattr(subject, what) != getattr(reference, what)
    ]
    for part in sorted(set(subject.components) | set(reference.components)):
        ours, theirs = subject.components.get(part), reference.components.get(part)
        if ours != theirs:
            found.append(Difference(part, ours, theirs))
    for role in sorted(set(subject.special) | set(reference.special)):
        ours_token, theirs_token = subject.special.get(role), reference.special.get(role)
        if ours_token != theirs_token:
            found.append(Difference(f"{role} token", ours_token, theirs_token))
    return found + flags, ""


@hookimpl
def qgate_checks() -> list[Check]:
    return [TokenizerParityCheck()]
