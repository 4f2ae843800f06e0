"""``identity``: is this quant really of the model it claims to be?

Many published quants are of the base model while the card claims a fine-tune (or the other way
round); the fine-tune's behaviour is then gone. This check weighs three kinds of evidence that
the subject was made from its *claimed source* (the run's reference by default, or
``claimed_source``) and from none of the ``not_from`` models (e.g. the base of a fine-tune):

- **weights** (GGUF only, the strongest): every tensor of the subject and of each candidate is
  dequantized, one at a time and at the same sampled rows (:mod:`qgate_gguf.weights`), and
  compared: relative error ``||s - c|| / ||c||`` and cosine similarity. A quant sits far closer
  to the tensors it was made from than to a fine-tune's or a base's. Tensors where the claim and
  a ``not_from`` model are the same (a LoRA leaves most tensors untouched) prove nothing and are
  left out of the vote.
- **behaviour**: the mean KL divergence of each candidate's next-token distributions to the
  subject's on chat-style prompts (the shipped prompt set, formatted with the claimed source's
  chat template, the input the claimed model is meant to see).
- **metadata** (the weakest, since anyone can edit it): name, basename, finetune and
  ``base_model.*`` fields, vocabulary size, tokenizer hash, chat template, architecture, tensor
  names and shapes.

The strongest evidence that can tell the candidates apart decides (weights, else behaviour, else
metadata) and the verdict says which one did. The others are reported as supporting evidence: a
failure there is a ``warn``, never a block. Everything measured is in the report's tables.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from qgate.backend import Backend, LoadedModel, ModelInfo
from qgate.chat import format_prompt
from qgate.check import Check, CheckContext
from qgate.errors import CheckError, QgateError
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.prompts import load_prompt_set
from qgate.results import CheckResult, Comparison, Interval, Severity, Verdict
from qgate.scoring.kld import kld_estimate
from qgate.stats import bootstrap_interval

if TYPE_CHECKING:
    from qgate.session import ModelHandle
    from qgate_gguf.reader import GGUFHeader
    from qgate_gguf.weights import TensorComparison

EvidenceKind = Literal["weights", "behaviour", "metadata"]
#: the order in which evidence decides: the first one that can tell the candidates apart
PRECEDENCE: tuple[EvidenceKind, ...] = ("weights", "behaviour", "metadata")

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
#: values compared per tensor by default, every k-th row: Gemma 3 270M Q8_0 vs F16 reads 7.8M
#: values per file in ~0.3-0.4 s (all 268M: ~8 s), with the same cosines to 5 decimals
DEFAULT_MAX_ELEMENTS = 65_536


@dataclass
class IdentityOptions:
    claimed_source: str | None = option(
        None, "the model the subject claims to be a quant of (default: the run's reference)"
    )
    not_from: list[str] = option(
        default_factory=list,
        help="models the subject must NOT be a quant of (e.g. the base of a claimed fine-tune)",
    )
    weights: bool = option(True, "compare dequantized tensors (GGUF subjects and candidates)")
    behaviour: Literal["always", "fallback", "never"] = option(
        "always",
        "measure the KL divergence to each candidate: always, only when the weights cannot "
        "decide (fallback: a cached reference is then never loaded for it), or never",
    )
    min_cosine: float = option(
        0.9,
        "a tensor matches the claim when its cosine similarity to it is at least this",
        minimum=-1,
        maximum=1,
    )
    min_match_share: float = option(
        0.8,
        "share of weight matrices that must match the claim (weight_match_share)",
        minimum=0,
        maximum=1,
    )
    min_closer_share: float = option(
        0.8,
        "share of the tensors (or metadata fields) that tell the claim and a not_from model "
        "apart on which the subject must be closer to the claim",
        minimum=0,
        maximum=1,
    )
    shared_tolerance: float = option(
        1e-3,
        "tensors where the claim and a not_from model differ by less than this relative error "
        "are shared by both and left out of the vote",
        minimum=0,
    )
    max_elements_per_tensor: int | None = option(
        DEFAULT_MAX_ELEMENTS,
        "values compared per tensor at most, every k-th row (null: every value)",
        minimum=1,
    )
    max_kld_ratio: float = option(
        0.5,
        "largest KLD(claim, subject) / min KLD(not_from, subject) (behaviour_kld_ratio)",
        minimum=0,
    )
    max_kld: float = option(
        1.0,
        "largest mean KLD to the claim when there is no not_from model (nats; an unrelated "
        "model of the same tokenizer is several nats away, a 2-bit quant of it < 1)",
        minimum=0,
    )
    min_metadata_match: float = option(
        0.75, "share of metadata fields that must equal the claim's", minimum=0, maximum=1
    )
    prompts: str = option("default", "a shipped prompt set's name, or a .jsonl file")
    max_prompts: int = option(16, "chat-style prompts scored per candidate at most", minimum=1)
    top_k: int = option(64, "candidate top-k kept exactly for the KLD", minimum=1)
    tail_samples: int = option(
        32, "ids sampled from the rest of the candidate's distribution (unbiased tail)", minimum=0
    )


# -- the candidates ----------------------------------------------------------------------------


@dataclass
class Candidate:
    """The claimed source or a not_from model."""

    role: Literal["claim", "not_from"]
    path: Path
    info: ModelInfo
    #: the run's reference handle when the candidate is the reference (loaded at most once)
    handle: ModelHandle | None = None

    @property
    def label(self) -> str:
        return f"{self.role}: {self.info.label or self.path.name}"


def _candidates(ctx: CheckContext, options: IdentityOptions) -> list[Candidate] | None:
    """The claim first, then the not_from models; None when there is no claim at all."""
    reference = ctx.reference
    out: list[Candidate] = []
    if options.claimed_source is None:
        if reference is None:
            return None
        out.append(Candidate("claim", reference.path, reference.info, reference))
    else:
        out.append(_open_candidate(ctx, "claim", Path(options.claimed_source)))
    for raw in options.not_from:
        out.append(_open_candidate(ctx, "not_from", Path(raw)))
    seen: dict[Path, str] = {}
    for cand in out:
        key = _resolved(cand.path)
        if key in seen:
            raise CheckError(f"{cand.path} is given twice (as {seen[key]} and as {cand.role})")
        seen[key] = cand.role
    return out


def _open_candidate(ctx: CheckContext, role: Literal["claim", "not_from"], path: Path) -> Candidate:
    reference = ctx.reference
    if reference is not None and _resolved(path) == _resolved(reference.path):
        return Candidate(role, reference.path, reference.info, reference)
    if not path.exists():
        raise CheckError(f"the {role} model {path} does not exist")
    backend = ctx.subject.backend
    if not backend.detect(path):
        raise CheckError(
            f"the {role} model {path} is not a {backend.name} model like the subject; "
            "identity compares models of the subject's format"
        )
    try:
        info = backend.inspect(path)
    except QgateError as exc:
        raise CheckError(f"cannot read the {role} model: {exc}") from None
    if not info.label:
        info.label = path.name
    return Candidate(role, path, info)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


# -- metadata evidence -------------------------------------------------------------------------


def read_header(info: ModelInfo) -> GGUFHeader | None:
    """The GGUF header of a GGUF model (tensor names, shapes, offsets); None for other formats
    or an unreadable file (which then fails later with its own, clearer error)."""
    if info.format != "gguf":
        return None
    from qgate_gguf.reader import read_gguf_header

    path = Path(info.path)
    try:
        stat = path.stat()
        key = (str(_resolved(path)), stat.st_size, stat.st_mtime_ns)
        if key not in _HEADERS:
            if len(_HEADERS) >= 8:
                _HEADERS.pop(next(iter(_HEADERS)))
            _HEADERS[key] = read_gguf_header(path)
        return _HEADERS[key]
    except (OSError, QgateError):
        return None


#: headers read lately, by (path, size, mtime): a ladder's reference is walked once, not once
#: per quant (Gemma 3's 262k-token vocabulary takes ~0.5 s to walk)
_HEADERS: dict[tuple[str, int, int], GGUFHeader] = {}


def tensor_shapes(header: GGUFHeader | None) -> dict[str, tuple[int, ...]] | None:
    return {t.name: t.shape for t in header.tensors} if header is not None else None


def metadata_facts(
    info: ModelInfo, shapes: dict[str, tuple[int, ...]] | None
) -> dict[str, str | None]:
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


def gather_metadata(
    subject: ModelInfo,
    candidates: Sequence[ModelInfo],
    headers: Sequence[GGUFHeader | None] | None = None,
) -> MetadataEvidence:
    """Metadata of the subject and each candidate; ``headers``: theirs, subject first."""
    infos = [subject, *candidates]
    known = list(headers) if headers is not None else [read_header(i) for i in infos]
    facts = [metadata_facts(i, tensor_shapes(h)) for i, h in zip(infos, known, strict=True)]
    return MetadataEvidence(facts[0], facts[1:], [field_matches(facts[0], c) for c in facts[1:]])


# -- weight evidence ---------------------------------------------------------------------------


@dataclass
class WeightEvidence:
    """Tensors of the subject (file 0) compared with each candidate (file k >= 1)."""

    tensors: list[TensorComparison]
    seconds: float
    min_cosine: float
    shared_tolerance: float

    def rel(self, k: int) -> np.ndarray:
        return np.array([t.rel_error(0, k) for t in self.tensors])

    def cos(self, k: int) -> np.ndarray:
        return np.array([t.cosine(0, k) for t in self.tensors])

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def matrices(self) -> np.ndarray:
        """Mask of the weight matrices (two or more dimensions). Norm and bias vectors stay out
        of the match vote and the summaries: every quant copies them unquantized, and a positive
        scale vector has a high cosine to almost any other. (They do vote on which candidate is
        closer: a quant of the base carries the base's norms exactly.) A tensor with no values
        (a zero dimension) is in neither: comparing nothing gives cosine 1, no evidence at all."""
        filled = np.array([t.elements > 0 for t in self.tensors], dtype=bool)
        mask = np.array([math.prod(t.shape[1:]) > 1 for t in self.tensors], dtype=bool) & filled
        return mask if mask.any() else filled

    def match_share(self) -> float:
        """Share of the weight matrices with cosine >= ``min_cosine`` to the claim."""
        if not self.matrices.any():
            return math.nan
        return float(np.mean(self.cos(1)[self.matrices] >= self.min_cosine))

    def telling(self, k: int) -> np.ndarray:
        """Tensors where the claim (file 1) and candidate ``k`` really differ."""
        return np.array(
            [t.rel_error(1, k) > self.shared_tolerance for t in self.tensors], dtype=bool
        )

    def closer(self, k: int) -> tuple[float | None, float | None, int]:
        """(share of telling tensors closer to the claim than to candidate ``k``, median error
        ratio claim/k over them, number of telling tensors)."""
        mask = self.telling(k)
        if not mask.any():
            return None, None, 0
        to_claim, to_other = self.rel(1)[mask], self.rel(k)[mask]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(to_other > 0, to_claim / to_other, np.inf)
        return float(np.mean(to_claim < to_other)), float(np.median(ratio)), int(mask.sum())


def compare_weights(
    paths: Sequence[Path],
    max_elements: int | None,
    progress: Callable[[int, int], None] | None = None,
    headers: Sequence[GGUFHeader | None] | None = None,
) -> list[TensorComparison]:
    """:func:`qgate_gguf.weights.compare_files`, its errors as :class:`CheckError`."""
    from qgate_gguf.weights import compare_files

    try:
        return compare_files(paths, max_elements=max_elements, progress=progress, headers=headers)
    except QgateError as exc:
        raise CheckError(f"weight comparison: {exc}") from None


# -- behaviour evidence ------------------------------------------------------------------------


@dataclass
class BehaviourEvidence:
    prompts: int
    tokens: int
    template_note: str
    #: per candidate: (KLD sum per prompt, scored tokens per prompt), or the reason it is missing
    per_candidate: list[tuple[np.ndarray, np.ndarray] | str]
    seconds: float

    def mean(self, k: int, idx: np.ndarray | None = None) -> float | None:
        entry = self.per_candidate[k]
        if isinstance(entry, str):
            return None
        sums, counts = entry
        if idx is not None:
            sums, counts = sums[idx], counts[idx]
        total = float(counts.sum())
        return max(float(sums.sum()) / total, 0.0) if total else None

    def ratio(self, idx: np.ndarray | None = None) -> float | None:
        """KLD to the claim over the smallest KLD to a comparable not_from model."""
        claim = self.mean(0, idx)
        others = [self.mean(k, idx) for k in range(1, len(self.per_candidate))]
        known = [o for o in others if o is not None]
        if claim is None or not known:
            return None
        nearest = min(known)
        if nearest <= 0:
            return math.inf if claim > 0 else 1.0
        return claim / nearest


def measure_behaviour(
    ctx: CheckContext, options: IdentityOptions, candidates: Sequence[Candidate]
) -> BehaviourEvidence:
    started = time.perf_counter()
    prompt_set = load_prompt_set(options.prompts)
    chat = [p for p in prompt_set.prompts if p.kind != "continuation"] or list(prompt_set.prompts)
    chat = chat[: options.max_prompts]
    template = candidates[0].info.chat_template
    rendered = [format_prompt(template, p.prompt, kind=p.kind) for p in chat]
    note = next((r.note for r in rendered if r.note), "")
    subject = ctx.subject.model
    sequences = [(r.text, subject.tokenize(r.text)) for r in rendered]
    per_candidate: list[tuple[np.ndarray, np.ndarray] | str] = []
    for number, cand in enumerate(candidates, 1):
        ctx.progress.update("identity: behaviour", number - 1, len(candidates), cand.label)
        model, owned = _load(ctx, cand)
        try:
            per_candidate.append(_kld_to(subject, model, sequences, options))
        finally:
            if owned:
                model.close()
    ctx.progress.update("identity: behaviour", len(candidates), len(candidates))
    return BehaviourEvidence(
        prompts=len(sequences),
        tokens=sum(max(min(len(t), subject.n_ctx) - 1, 0) for _, t in sequences),
        template_note=note,
        per_candidate=per_candidate,
        seconds=time.perf_counter() - started,
    )


def _load(ctx: CheckContext, cand: Candidate) -> tuple[LoadedModel, bool]:
    if cand.handle is not None:
        return cand.handle.model, False
    ctx.progress.log(f"identity: loading the {cand.role} model {cand.path.name}")
    backend: Backend = ctx.subject.backend
    try:
        return backend.load(cand.path, ctx.subject.options), True
    except QgateError as exc:
        raise CheckError(f"cannot load the {cand.role} model: {exc}") from None


def _kld_to(
    subject: LoadedModel,
    model: LoadedModel,
    sequences: Sequence[tuple[str, list[int]]],
    options: IdentityOptions,
) -> tuple[np.ndarray, np.ndarray] | str:
    """KL(candidate || subject) per prompt (sum, count), or why it cannot be measured."""
    if model.n_vocab != subject.n_vocab:
        return f"different vocabulary ({model.n_vocab} vs the subject's {subject.n_vocab} tokens)"
    limit = min(subject.n_ctx, model.n_ctx)
    sums = np.zeros(len(sequences))
    counts = np.zeros(len(sequences))
    for index, (text, tokens) in enumerate(sequences):
        if model.tokenize(text) != tokens:
            return "its tokenizer splits the prompts differently from the subject's"
        tokens = tokens[:limit]
        if len(tokens) < 2:
            continue
        ref = model.score(tokens, start=1, top_k=options.top_k, tail_samples=options.tail_samples)
        gather = ref.top_ids
        if ref.tail_ids is not None:
            gather = np.concatenate([ref.top_ids, ref.tail_ids], axis=1)
        sub = subject.score(tokens, start=1, top_k=1, gather=gather)
        if sub.gathered_logprobs is None:
            raise CheckError("the subject's backend returned no gathered log-probabilities")
        k = ref.top_ids.shape[1]
        kld = kld_estimate(
            ref.top_logprobs,
            sub.gathered_logprobs[:, :k],
            ref.tail_logprobs,
            sub.gathered_logprobs[:, k:] if ref.tail_logprobs is not None else None,
        )
        sums[index] = float(kld.sum())
        counts[index] = len(kld)
    if not counts.any():
        return "no prompt has two tokens"
    return sums, counts


# -- the check ---------------------------------------------------------------------------------


@dataclass
class Evidence:
    """What was gathered, and which kinds can tell the candidates apart."""

    metadata: MetadataEvidence
    weights: WeightEvidence | None = None
    weights_note: str = ""
    behaviour: BehaviourEvidence | None = None
    behaviour_note: str = ""
    decisive: dict[str, str] = field(default_factory=dict)  #: kind -> "" or why not


class IdentityCheck(Check):
    name = "identity"
    description = (
        "is the subject a quant of the model it claims (weights, behaviour, metadata), and of "
        "none of the not_from models?"
    )
    Options = IdentityOptions
    needs_reference = False  # the claim may be named in the options instead

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        options: IdentityOptions = ctx.options
        candidates = _candidates(ctx, options)
        if candidates is None:
            return [ctx.skip("no claimed source: give --reference or the claimed_source option")]
        evidence = self.gather(ctx, options, candidates)
        return self.judge(ctx, options, candidates, evidence)

    # -- gathering ---------------------------------------------------------------------------
    def gather(
        self, ctx: CheckContext, options: IdentityOptions, candidates: list[Candidate]
    ) -> Evidence:
        subject = ctx.subject
        infos = [subject.info, *(c.info for c in candidates)]
        headers = [read_header(i) for i in infos]
        evidence = Evidence(gather_metadata(infos[0], infos[1:], headers))
        not_from = len(candidates) > 1
        formats = {subject.info.format, *(c.info.format for c in candidates)}
        if not options.weights:
            evidence.weights_note = "turned off (weights: false)"
        elif formats != {"gguf"}:
            evidence.weights_note = (
                f"needs GGUF files (the subject and candidates are {', '.join(sorted(formats))})"
            )
        else:
            started = time.perf_counter()
            tensors = compare_weights(
                [subject.path, *(c.path for c in candidates)],
                options.max_elements_per_tensor,
                lambda done, total: ctx.progress.update("identity: tensors", done, total),
                headers,
            )
            evidence.weights = WeightEvidence(
                tensors, time.perf_counter() - started, options.min_cosine, options.shared_tolerance
            )
        evidence.decisive["weights"] = self._weights_decisive(evidence, candidates)
        run_behaviour = options.behaviour == "always" or (
            options.behaviour == "fallback" and evidence.decisive["weights"] != ""
        )
        if run_behaviour:
            evidence.behaviour = measure_behaviour(ctx, options, candidates)
        else:
            evidence.behaviour_note = (
                "turned off (behaviour: never)"
                if options.behaviour == "never"
                else "not measured: the weights decide (behaviour: fallback)"
            )
        evidence.decisive["behaviour"] = self._behaviour_decisive(evidence, not_from)
        meta_share = evidence.metadata.match_share(0)
        evidence.decisive["metadata"] = (
            "no metadata field can be compared" if meta_share is None else ""
        )
        if not_from and evidence.decisive["metadata"] == "":
            for k in range(1, len(candidates)):
                if evidence.metadata.closer_share(k)[0] is None:
                    evidence.decisive["metadata"] = (
                        f"the claim and {candidates[k].path.name} have the same metadata"
                    )
        return evidence

    @staticmethod
    def _weights_decisive(evidence: Evidence, candidates: list[Candidate]) -> str:
        weights = evidence.weights
        if weights is None:
            return evidence.weights_note
        if not weights.tensors:
            return "the files have no tensors"
        if not weights.matrices.any():
            return "no tensor of the files holds any values"
        for k in range(2, len(candidates) + 1):
            if weights.closer(k)[2] == 0:
                return (
                    f"the claim and {candidates[k - 1].path.name} have the same weights at every "
                    "sampled row"
                )
        return ""

    @staticmethod
    def _behaviour_decisive(evidence: Evidence, not_from: bool) -> str:
        behaviour = evidence.behaviour
        if behaviour is None:
            return evidence.behaviour_note
        claim = behaviour.per_candidate[0]
        if isinstance(claim, str):
            return f"the claim cannot be compared: {claim}"
        if not_from and behaviour.ratio() is None:
            return "no not_from model can be compared: " + "; ".join(
                e for e in behaviour.per_candidate[1:] if isinstance(e, str)
            )
        return ""

    # -- judging -----------------------------------------------------------------------------
    def judge(
        self,
        ctx: CheckContext,
        options: IdentityOptions,
        candidates: list[Candidate],
        evidence: Evidence,
    ) -> list[CheckResult]:
        decided_by = next((k for k in PRECEDENCE if evidence.decisive.get(k) == ""), None)
        not_from = candidates[1:]
        results: list[CheckResult] = []
        for kind in PRECEDENCE:
            if kind == "weights" and evidence.weights is not None:
                produced = self._weight_results(ctx, options, candidates, evidence.weights)
            elif kind == "behaviour" and evidence.behaviour is not None:
                produced = self._behaviour_results(ctx, options, candidates, evidence.behaviour)
            elif kind == "metadata":
                produced = self._metadata_results(ctx, options, candidates, evidence.metadata)
            else:
                continue
            if kind != decided_by:
                produced = [_supporting(r, kind, decided_by) for r in produced]
            else:
                for r in produced:
                    r.message += f" [deciding evidence: {kind}]"
            results.extend(produced)
        if decided_by is None:
            reasons = "; ".join(f"{k}: {evidence.decisive[k]}" for k in PRECEDENCE)
            results.insert(
                0,
                CheckResult(
                    check=ctx.check_name,
                    check_id=ctx.spec.key,
                    metric="identity",
                    verdict=_undecided_verdict(ctx),
                    message=f"no evidence can tell the candidates apart ({reasons}); "
                    f"on_inconclusive: {ctx.on_inconclusive}",
                    severity=Severity(ctx.spec.severity),
                    # no value to judge: the verdict is on_inconclusive's, and says so
                    details={"inconclusive": True},
                    on_inconclusive=ctx.on_inconclusive,
                ),
            )
        if not results:
            results.append(ctx.skip("no evidence was gathered"))
        first = results[0]
        first.details.update(
            {
                "decided_by": decided_by,
                "claim": str(candidates[0].path),
                "not_from": [str(c.path) for c in not_from],
                "undecided": {k: v for k, v in evidence.decisive.items() if v},
                "seconds": {
                    "weights": round(evidence.weights.seconds, 3) if evidence.weights else None,
                    "behaviour": round(evidence.behaviour.seconds, 3)
                    if evidence.behaviour
                    else None,
                },
                "tables": evidence_tables(candidates, evidence),
            }
        )
        return results

    def _weight_results(
        self,
        ctx: CheckContext,
        options: IdentityOptions,
        candidates: list[Candidate],
        weights: WeightEvidence,
    ) -> list[CheckResult]:
        cos = weights.cos(1)[weights.matrices]
        if not len(cos):  # nothing was compared: no weight result (see _weights_decisive)
            return []
        share = weights.match_share()
        results = [
            ctx.result(
                "weight_match_share",
                share,
                threshold=options.min_match_share,
                comparison=Comparison.GE,
                unit="%",
                message=f"weights: {share:.0%} of {len(cos)} weight matrices have cosine >= "
                f"{options.min_cosine} to the claim (median cosine {np.median(cos):.4f}, "
                f"median rel. error {np.median(weights.rel(1)[weights.matrices]):.4f}; "
                f"{len(weights.tensors)} tensors, {weights.elements:,} values compared)",
                details={"median_cosine": float(np.median(cos)), "min_cosine": float(cos.min())},
            )
        ]
        per_other = []
        for k in range(2, len(candidates) + 1):
            closer, ratio, telling = weights.closer(k)
            if closer is not None:
                per_other.append((closer, ratio, telling, candidates[k - 1]))
        if per_other:
            closer, ratio, telling, worst = min(per_other, key=lambda row: row[0])
            results.append(
                ctx.result(
                    "weight_closer_share",
                    closer,
                    threshold=options.min_closer_share,
                    comparison=Comparison.GE,
                    unit="%",
                    message=f"weights: closer to the claim than to {worst.path.name} on "
                    f"{closer:.0%} of {telling} tensors that tell them apart (median error "
                    f"ratio claim/not_from {ratio:.3f})",
                    details={"median_error_ratio": ratio, "telling_tensors": telling},
                )
            )
        return results

    def _behaviour_results(
        self,
        ctx: CheckContext,
        options: IdentityOptions,
        candidates: list[Candidate],
        behaviour: BehaviourEvidence,
    ) -> list[CheckResult]:
        claim = behaviour.mean(0)
        if claim is None:
            return []
        settings = ctx.policy.evaluation
        n = behaviour.prompts

        def interval(statistic: Callable[[np.ndarray], float | None]) -> Interval | None:
            def safe(idx: np.ndarray) -> float:
                value = statistic(idx)
                return math.nan if value is None else value

            found = bootstrap_interval(
                n,
                safe,
                resamples=settings.bootstrap,
                confidence=settings.confidence,
                seed=settings.seed,
            )
            if found is None or not (math.isfinite(found.low) and math.isfinite(found.high)):
                return None
            return found

        where = f"{behaviour.prompts} chat prompts, {behaviour.tokens} tokens"
        if len(candidates) == 1:
            return [
                ctx.result(
                    "behaviour_kld",
                    claim,
                    threshold=options.max_kld,
                    comparison=Comparison.LE,
                    interval=interval(lambda idx: behaviour.mean(0, idx)),
                    message=f"behaviour: mean KLD to the claim {claim:.4f} nats ({where})",
                )
            ]
        ratio = behaviour.ratio()
        if ratio is None:
            return []
        others = [
            (mean, candidates[k].path.name)
            for k in range(1, len(candidates))
            if (mean := behaviour.mean(k)) is not None
        ]
        nearest = min(others)
        return [
            ctx.result(
                "behaviour_kld_ratio",
                ratio,
                threshold=options.max_kld_ratio,
                comparison=Comparison.LE,
                interval=interval(behaviour.ratio),
                message=f"behaviour: mean KLD to the claim {claim:.4f} vs {nearest[0]:.4f} to "
                f"{nearest[1]} (ratio {ratio:.3f}; {where})",
                details={"kld_claim": claim, "kld_nearest_not_from": nearest[0]},
            )
        ]

    def _metadata_results(
        self,
        ctx: CheckContext,
        options: IdentityOptions,
        candidates: list[Candidate],
        metadata: MetadataEvidence,
    ) -> list[CheckResult]:
        share = metadata.match_share(0)
        if share is None:
            return []
        differing = [k for k, same in metadata.matches[0].items() if same is False]
        results = [
            ctx.result(
                "metadata_match_share",
                share,
                threshold=options.min_metadata_match,
                comparison=Comparison.GE,
                unit="%",
                message=f"metadata: {metadata.match_count(0)} fields equal the claim's"
                + (f" (differ: {', '.join(differing)})" if differing else ""),
            )
        ]
        rows = []
        for k in range(1, len(candidates)):
            closer, telling = metadata.closer_share(k)
            if closer is not None:
                rows.append((closer, telling, candidates[k].path.name))
        if rows:
            closer, telling, name = min(rows)
            results.append(
                ctx.result(
                    "metadata_closer_share",
                    closer,
                    threshold=options.min_closer_share,
                    comparison=Comparison.GE,
                    unit="%",
                    message=f"metadata: equals the claim on {closer:.0%} of the {telling} fields "
                    f"where the claim and {name} differ",
                )
            )
        return results


def _undecided_verdict(ctx: CheckContext) -> Verdict:
    verdict = Verdict(ctx.on_inconclusive)
    if verdict is Verdict.FAIL and ctx.spec.severity == Severity.WARN.value:
        return Verdict.WARN
    return verdict


def _supporting(result: CheckResult, kind: str, decided_by: str | None) -> CheckResult:
    """A result of evidence that did not decide: reported, never blocking."""
    if result.verdict in (Verdict.FAIL, Verdict.ERROR):
        result.verdict = Verdict.WARN
    who = f"{decided_by} decided" if decided_by else "nothing decided"
    result.message = f"{result.message} [supporting evidence, {who}]"
    result.details["supporting"] = True
    return result


# -- the report --------------------------------------------------------------------------------


def evidence_tables(candidates: Sequence[Candidate], evidence: Evidence) -> list[dict[str, Any]]:
    """Per candidate, per metadata field, and the least similar tensors."""
    weights, behaviour, metadata = evidence.weights, evidence.behaviour, evidence.metadata
    rows = []
    for index, cand in enumerate(candidates):
        k = index + 1
        row: list[Any] = [cand.path.name, cand.role, metadata.match_count(index)]
        if weights is not None:
            row += [
                len(weights.tensors),
                _round(float(np.median(weights.rel(k)[weights.matrices]))),
                _round(float(np.median(weights.cos(k)[weights.matrices]))),
            ]
            if k == 1:
                row.append("-")
            else:
                closer, ratio, telling = weights.closer(k)
                row.append(
                    f"{closer:.0%} of {telling} (median ratio {ratio:.3f})"
                    if closer is not None and ratio is not None
                    else "no tensor tells them apart"
                )
        else:
            row += ["n/a", "n/a", "n/a", "n/a"]
        if behaviour is not None:
            entry = behaviour.per_candidate[index]
            mean = behaviour.mean(index)
            row.append(_round(mean) if mean is not None else str(entry))
        else:
            row.append("n/a")
        rows.append(row)
    tables: list[dict[str, Any]] = [
        {
            "title": "Identity evidence by candidate",
            "columns": [
                "candidate",
                "role",
                "metadata fields equal",
                "tensors compared",
                "median rel. error",
                "median cosine",
                "tensors closer to the claim",
                "mean KLD (nats)",
            ],
            "rows": rows,
        }
    ]
    keys = [k for k in metadata.subject if not k.startswith("_")]
    for facts in metadata.candidates:
        keys += [k for k in facts if k not in keys and not k.startswith("_")]
    tables.append(
        {
            "title": "Identity metadata (weak evidence: it can be edited)",
            "columns": ["field", "subject"] + [c.path.name for c in candidates],
            "rows": [
                [key, _show(metadata.subject.get(key))]
                + [_show(f.get(key)) for f in metadata.candidates]
                for key in keys
            ],
        }
    )
    if weights is not None and weights.tensors:
        cos, rel = weights.cos(1), weights.rel(1)
        order = np.argsort(cos, kind="stable")[:8]
        tables.append(
            {
                "title": "Tensors least similar to the claim",
                "columns": ["tensor", "shape", "types", "values compared", "rel. error", "cosine"],
                "rows": [
                    [
                        weights.tensors[i].name,
                        "x".join(str(d) for d in weights.tensors[i].shape),
                        " / ".join(weights.tensors[i].types[:2]),
                        weights.tensors[i].elements,
                        _round(float(rel[i])),
                        _round(float(cos[i])),
                    ]
                    for i in order
                ],
            }
        )
    notes = [f"{kind}: {why}" for kind, why in evidence.decisive.items() if why]
    if behaviour is not None and behaviour.template_note:
        notes.append(f"behaviour prompts: {behaviour.template_note}")
    if notes:
        tables.append(
            {"title": "Evidence not used", "columns": ["note"], "rows": [[n] for n in notes]}
        )
    return tables


def _round(value: float) -> float | str:
    if not math.isfinite(value):
        return str(value)
    return float(f"{value:.5g}")


def _show(value: str | None) -> str:
    return "-" if value is None else value


def _short(digest: str | None) -> str | None:
    return digest[:12] if digest else None


def _digest(items: Any) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode() + b"\x00")
    return h.hexdigest()


# -- qgate inspect --identity ------------------------------------------------------------------


def pairwise_evidence(
    a: ModelInfo,
    b: ModelInfo,
    *,
    max_elements: int | None = DEFAULT_MAX_ELEMENTS,
    min_cosine: float = 0.9,
) -> dict[str, Any]:
    """The identity evidence between two artifacts that needs no loading: metadata side by
    side, and for two GGUF files a tensor-by-tensor comparison of ``a`` against ``b``."""
    headers = [read_header(a), read_header(b)]
    metadata = gather_metadata(a, [b], headers)
    out: dict[str, Any] = {
        "a": a.path,
        "b": b.path,
        "metadata": [
            {
                "field": key,
                "a": metadata.subject.get(key),
                "b": metadata.candidates[0].get(key),
                "same": same,
            }
            for key, same in metadata.matches[0].items()
        ],
        "metadata_equal": metadata.match_count(0),
    }
    if a.format != "gguf" or b.format != "gguf":
        out["weights"] = {"unavailable": f"needs two GGUF files ({a.format}, {b.format})"}
        return out
    started = time.perf_counter()
    tensors = compare_weights([Path(a.path), Path(b.path)], max_elements, headers=headers)
    weights = WeightEvidence(tensors, time.perf_counter() - started, min_cosine, 0.0)
    cos, rel = weights.cos(1), weights.rel(1)
    order = np.argsort(cos, kind="stable")[:5]
    matrices = weights.matrices if tensors else np.zeros(0, dtype=bool)
    out["weights"] = {
        "tensors": len(tensors),
        "matrices": int(matrices.sum()),
        "values_compared": weights.elements,
        "max_values_per_tensor": max_elements,
        "identical_tensors": int(np.sum(rel == 0)),
        "median_rel_error": float(np.median(rel[matrices])) if matrices.any() else None,
        "max_rel_error": float(np.max(rel)) if len(rel) else None,
        "median_cosine": float(np.median(cos[matrices])) if matrices.any() else None,
        "min_cosine": float(np.min(cos)) if len(cos) else None,
        "match_share": weights.match_share() if matrices.any() else None,
        "min_cosine_for_match": min_cosine,
        "least_similar": [
            {
                "tensor": tensors[i].name,
                "types": list(tensors[i].types),
                "rel_error": float(rel[i]),
                "cosine": float(cos[i]),
            }
            for i in order
        ],
        "seconds": round(weights.seconds, 3),
    }
    return out


def format_pairwise(data: dict[str, Any]) -> str:
    """``pairwise_evidence`` as text for the terminal."""
    lines = [f"identity evidence: A = {data['a']}", f"                   B = {data['b']}", ""]
    lines.append(f"metadata ({data['metadata_equal']} comparable fields equal; it can be edited):")
    rows = data["metadata"]
    width = max((len(row["field"]) for row in rows), default=5)
    a_width = max((len(_show(row["a"])) for row in rows), default=1)
    for row in rows:
        mark = "=" if row["same"] else "?" if row["same"] is None else "≠"
        lines.append(
            f"  {mark} {row['field']:<{width}}  A: {_show(row['a']):<{a_width}}  "
            f"B: {_show(row['b'])}"
        )
    weights = data["weights"]
    lines.append("")
    if "unavailable" in weights:
        lines.append(f"weights: unavailable: {weights['unavailable']}")
        return "\n".join(lines)
    lines.append(
        f"weights ({weights['tensors']} tensors, {weights['matrices']} of them matrices; "
        f"{weights['values_compared']:,} values compared, at most "
        f"{weights['max_values_per_tensor'] or 'all'} per tensor; {weights['seconds']}s):"
    )
    if weights["match_share"] is None:  # no tensors, or none that holds a value
        if weights["tensors"]:
            lines.append("  no tensor holds any values: there is nothing to compare")
        return "\n".join(lines)
    share = weights["match_share"]
    lines += [
        f"  rel. error ||A-B||/||B||, matrices: median {weights['median_rel_error']:.5f} "
        f"(max over all tensors {weights['max_rel_error']:.5f})",
        f"  cosine similarity, matrices:       median {weights['median_cosine']:.5f} "
        f"(min over all tensors {weights['min_cosine']:.5f})",
        f"  identical tensors: {weights['identical_tensors']}; matrices with cosine >= "
        f"{weights['min_cosine_for_match']}: {share:.0%}",
        "  least similar:",
    ]
    lines += [
        f"    {t['tensor']} ({' / '.join(t['types'])}): rel. error {t['rel_error']:.5f}, "
        f"cosine {t['cosine']:.5f}"
        for t in weights["least_similar"]
    ]
    verdict = (
        "consistent with one being a quant of the other (to tell a fine-tune from its base, "
        "compare the quant with both: the identity check's not_from option)"
        if share >= 0.8
        else "not a quant of one another: the weights differ beyond quantization error"
    )
    lines += ["", f"summary: {verdict}"]
    return "\n".join(lines)


@hookimpl
def qgate_checks() -> list[Check]:
    return [IdentityCheck()]
