"""The backend interface: how qgate opens, describes, scores and runs a model artifact.

A backend plugin provides a :class:`Backend`; ``Backend.inspect`` reads metadata without loading
weights (static checks need nothing more), ``Backend.load`` returns a :class:`LoadedModel` that
can tokenize, score token sequences and generate, and ``Backend.tensor_reader`` (optional) hands
out the weights tensor by tensor, dequantized, for checks that compare weights. Heavy imports
(llama_cpp, torch, ...) belong inside those methods so a missing extra becomes a clear
:class:`MissingExtraError`. Everything format-specific stays inside the backend: no check or
core module asks which format a model is in to decide how to read it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from qgate.options import option

KVCacheType = Literal[
    "f32", "f16", "bf16", "q8_0", "q6", "q5_1", "q5_0", "q4_1", "q4_0", "q4", "q8", "iq4_nl"
]

#: The order of KV cache types from most to least precise, for ``quant-floor`` rules.
KV_CACHE_BITS: dict[str, float] = {
    "f32": 32,
    "f16": 16,
    "bf16": 16,
    "q8_0": 8.5,
    "q8": 8.5,
    "q6": 6.5,
    "q5_1": 6,
    "q5_0": 5.5,
    "q4_1": 5,
    "iq4_nl": 4.5,
    "q4_0": 4.5,
    "q4": 4.5,
}


@dataclass
class BackendOptions:
    """Load-time settings shared by every backend; a backend ignores what it cannot honour."""

    n_ctx: int = option(512, "context size in tokens", minimum=16)
    threads: int | None = option(None, "CPU threads (default: all cores)", minimum=1)
    batch_size: int | None = option(
        None, "tokens per forward pass (default: the backend chooses)", minimum=1
    )
    gpu_layers: int = option(0, "layers to offload to the GPU (-1: all)", minimum=-1)
    kv_cache: KVCacheType = option("f16", "KV cache type for keys and values")
    seed: int = option(1234, "seed for sampling", minimum=0)
    #: backend-specific settings, passed through untouched
    extra: dict[str, Any] = option(default_factory=dict, help="backend-specific settings")


@dataclass(frozen=True)
class SpecialToken:
    """One special token of a tokenizer: its id and its text (either may be unknown)."""

    id: int | None
    text: str | None = None


@dataclass
class TokenizerFacts:
    """A tokenizer described from the artifact's files, so that two can be compared exactly.

    ``components`` digests compare only within one ``family`` (a GGUF vocabulary and a Hugging
    Face ``tokenizer.json`` are stored, and digested, differently); special-token texts and the
    flags compare across families.
    """

    family: str  #: how the format stores a tokenizer (``gguf``, ``huggingface``, ``fake``)
    model: str | None = None  #: the tokenizer algorithm as the format names it (``gpt2``, BPE)
    pre_tokenizer: str | None = None  #: how text is split before the model runs (``qwen2``)
    #: part name -> sha256 of its stored form: vocabulary, merges, token types, pre-tokenizer...
    components: dict[str, str] = field(default_factory=dict)
    #: role (``bos``, ``eos``, ``eot``, ``pad``, ``unk``...) -> the token the artifact names
    special: dict[str, SpecialToken] = field(default_factory=dict)
    add_bos: bool | None = None  #: None: the file does not say
    add_eos: bool | None = None
    add_space_prefix: bool | None = None

    @property
    def fingerprint(self) -> str:
        """One digest of everything above."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass
class ModelConfig:
    """The hyperparameters that decide what a model computes, normalised across formats
    (GGUF keys, ``config.json`` of any transformers version), as the artifact's runtime will
    read them. None: the artifact does not say and no default is known."""

    runtime: str = ""  #: whose reading this is (``llama.cpp``, ``transformers``, ``exllamav2``)
    context_length: int | None = None
    rope_base: float | None = None
    rope_base_local: float | None = None  #: of sliding-window layers, where it differs
    rope_scaling: str | None = None  #: ``none``, ``linear``, ``yarn``, ``llama3``, ...
    rope_scaling_factor: float | None = None
    rope_original_context: int | None = None
    rope_dimensions: int | None = None  #: rotated dimensions per head (partial rotary)
    norm_eps: float | None = None
    layers: int | None = None
    hidden_size: int | None = None
    feed_forward: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    sliding_window: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool | None = None
    #: field -> how the runtime reads it, where that is not simply the stored value (a
    #: default for an absent key, or a key the runtime does not read)
    readings: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelInfo:
    """What a model artifact says about itself, read without loading its weights."""

    path: str
    format: str
    label: str = ""  #: a short name for reports (the file or folder name)
    architecture: str | None = None
    parameter_count: int | None = None
    file_type: str | None = None
    bits_per_weight: float | None = None
    #: tensor type name -> number of tensors of that type
    tensor_types: dict[str, int] = field(default_factory=dict)
    #: tensor name -> type name, for ``quant-floor`` rules on named tensors
    tensor_type_by_name: dict[str, str] = field(default_factory=dict)
    expert_count: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    #: identity fields: name, basename, finetune, base_model.* ...
    identity: dict[str, str] = field(default_factory=dict)
    tokenizer_hash: str | None = None
    chat_template_hash: str | None = None
    #: the Jinja chat template from the artifact (untrusted: render only with qgate.chat)
    chat_template: str | None = None
    file_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the tokenizer in detail (pre-tokenizer, merges, special tokens, flags), for parity checks
    tokenizer: TokenizerFacts | None = None
    #: the normalised hyperparameters, for parity checks
    config: ModelConfig | None = None

    def condition_fields(self) -> dict[str, Any]:
        """The fields a policy's ``when:`` may test."""
        return {
            "format": self.format,
            "architecture": self.architecture,
            "bits_per_weight": self.bits_per_weight,
            "expert_count": self.expert_count or 0,
            "parameter_count": self.parameter_count,
            "context_length": self.context_length,
            "file_type": self.file_type,
        }

    def to_dict(self, *, with_tensors: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data.pop("chat_template")  # large and untrusted; the hash identifies it
        if not with_tensors:
            data.pop("tensor_type_by_name")
        return data


@dataclass
class TokenScores:
    """What one scoring pass measured at the scored positions of one token sequence.

    Row ``i`` describes the prediction of ``tokens[start + i]`` from the tokens before it.
    """

    start: int
    target_logprob: np.ndarray  #: float64 [n]: log p(actual next token)
    top_ids: np.ndarray  #: int32 [n, k]: the k most likely token ids, most likely first
    top_logprobs: np.ndarray  #: float32 [n, k]: their log-probabilities
    gathered_logprobs: np.ndarray | None = None  #: float32 [n, g]: log-probs at requested ids
    #: int32 [n, m]: ids sampled from the distribution outside the top-k (for the KLD estimate)
    tail_ids: np.ndarray | None = None
    tail_logprobs: np.ndarray | None = None  #: float32 [n, m]: their log-probabilities
    #: the scored positions when they are not simply ``start, start + 1, ...``
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.target_logprob.shape[0])


@dataclass
class GenerationSettings:
    max_tokens: int = 128
    temperature: float = 0.0  #: 0 is greedy
    top_p: float = 1.0
    seed: int = 1234
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, already formatted for the model, and how to decode it."""

    prompt: str
    settings: GenerationSettings


@dataclass
class Generation:
    text: str
    tokens: list[int]
    finish_reason: Literal["stop", "length", "eos"]
    prompt_tokens: int = 0
    seconds: float = 0.0


class LoadedModel(ABC):
    """A model in memory, loaded once per run and shared by every check."""

    info: ModelInfo
    n_ctx: int
    n_vocab: int

    @abstractmethod
    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (with the model's BOS token first when ``add_bos``)."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``."""

    @property
    @abstractmethod
    def bos_token(self) -> int | None:
        """The beginning-of-sequence token id, if the model has one."""

    @abstractmethod
    def score(
        self,
        tokens: Sequence[int],
        *,
        start: int,
        top_k: int,
        gather: np.ndarray | None = None,
        tail_samples: int = 0,
        positions: Sequence[int] | None = None,
    ) -> TokenScores:
        """Score ``tokens[start:]``, each predicted from all tokens before it, in one context.

        Logits are needed only at positions ``start - 1 .. len(tokens) - 2``; a backend must not
        compute the output layer anywhere else when it can avoid it.

        :param tokens: at most ``n_ctx`` token ids; the first is usually BOS.
        :param start: first scored position, >= 1.
        :param top_k: how many of the most likely tokens to return per position.
        :param gather: int [n_scored, g] token ids whose log-probabilities to return per position
            (the reference's top-k and tail samples, so the KL divergence can be computed against
            a cached reference).
        :param tail_samples: how many ids per position to sample from the distribution outside
            the top-k (``summarize_logits`` does it; seed it from the tokens for repeatability).
        :param positions: score only these positions (ascending, each >= 1) instead of every
            position from ``start``: a long-context check samples a few per bucket. Row ``i`` of
            the result then describes ``tokens[positions[i]]`` and ``gather`` has one row each.
        :raises CheckError: when the logits are not finite.
        """

    @abstractmethod
    def generate(self, prompt: str, settings: GenerationSettings) -> Generation:
        """Continue ``prompt`` (plain text; chat formatting is the caller's) under ``settings``."""

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> LoadedModel:
        """The same weights with another context size or KV cache type.

        Backends that can share weights between contexts override this (llama.cpp does);
        the default raises ``NotImplementedError`` and callers load the model again instead.
        """
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model's memory. Called once the runner is done with it."""


_Reader = TypeVar("_Reader", bound="TensorReader")


@dataclass(frozen=True)
class TensorMeta:
    """One weight tensor as a :class:`TensorReader` lists it.

    A tensor is read as ``rows`` rows of ``row_length`` values: a row is a run of contiguous
    values in the file (one row of a weight matrix), so any set of rows can be dequantized on
    its own and the same row indices pick the same weights in two files of one architecture.
    """

    name: str
    shape: tuple[int, ...]  #: as the format records it
    type_name: str  #: the storage type (``Q4_K``, ``F16``, ``BF16``, ...)
    rows: int
    row_length: int


@dataclass(frozen=True)
class TensorHealth:
    """What one pass over a stored tensor found: a tensor is healthy when every value it stores
    (block scales of a quantized type included) is finite, its weights are not all zero, and
    its bytes are all there."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    values: int = 0  #: stored numbers looked at (values, or block scales of a quantized type)
    non_finite: int = 0  #: NaN or infinite among them
    all_zero: bool = False  #: every weight is zero
    problem: str = ""  #: a storage fault: bytes missing, or overlapping another tensor's

    @property
    def healthy(self) -> bool:
        return not (self.non_finite or self.all_zero or self.problem)


#: values per block when a reader's tensors are checked through their dequantized rows
_HEALTH_BLOCK_ELEMENTS = 1 << 22


class TensorReader(ABC):
    """A model's weights, read one tensor (or a few rows of one) at a time, dequantized.

    Comparing the weights of two 70B models must never hold either in memory: a reader returns
    float32 rows on request and keeps nothing. Use it as a context manager.
    """

    #: every weight tensor, in file order
    tensors: list[TensorMeta]

    @abstractmethod
    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """float32 ``[len(rows), row_length]``: the given rows of tensor ``name``, dequantized.

        :raises BackendError: for an unknown tensor, a row out of range, or a file too short.
        """

    def health(self, name: str) -> TensorHealth:
        """Every row of tensor ``name``, dequantized a block at a time, checked for NaN, infinity
        and all zeros. A reader that can look at the stored numbers directly (block scales are
        far fewer than values) overrides this."""
        meta = next((t for t in self.tensors if t.name == name), None)
        if meta is None:
            raise KeyError(name)
        step = max(1, _HEALTH_BLOCK_ELEMENTS // max(meta.row_length, 1))
        non_finite, nonzero = 0, False
        for first in range(0, meta.rows, step):
            values = self.read_rows(name, np.arange(first, min(first + step, meta.rows)))
            finite = np.isfinite(values)
            non_finite += int(values.size - np.count_nonzero(finite))
            nonzero = nonzero or bool(np.any(values[finite] != 0))
        count = meta.rows * meta.row_length
        return TensorHealth(
            name, meta.shape, meta.type_name, count, non_finite, all_zero=count > 0 and not nonzero
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Backend(ABC):
    """A plugin that opens one model format."""

    #: the name used in ``--backend`` and policies
    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: the pip extra that installs what this backend needs (``qgate-llm[extra]``)
    extra: ClassVar[str | None] = None

    @abstractmethod
    def detect(self, path: Path) -> float:
        """Cheaply judge whether ``path`` is in this backend's format: a confidence from 0 (not
        this format) to 1 (certain: magic bytes, a format marker). Something in between means
        "plausible" (a folder with a ``config.json``), so a backend with a surer claim wins;
        two backends with the same highest claim are an error that names both. ``True`` and
        ``False`` count as 1 and 0."""

    @abstractmethod
    def inspect(self, path: Path) -> ModelInfo:
        """Read metadata without loading weights.

        :raises BackendError: for a missing, truncated or malformed artifact.
        """

    @abstractmethod
    def load(self, path: Path, options: BackendOptions) -> LoadedModel:
        """Load the model for scoring and generation.

        :raises BackendError: when the model cannot be loaded (with the reason).
        :raises MissingExtraError: when the backend's packages are not installed.
        """

    def tensor_reader(self, path: Path) -> TensorReader | None:
        """The artifact's weights, for checks that compare tensors (``identity``), without
        loading the model; None when this format cannot hand them out (the default).

        :raises BackendError: when the artifact's tensors cannot be read.
        """
        return None

    def runs_full_precision(self, path: Path) -> bool:
        """Whether this backend's runtime can run ``path``, a full-precision model that may be
        of another format (exllamav2 runs an FP16 Hugging Face folder), for the runtime floor:
        the reference's own weights through the subject's runtime. The default: only models of
        this backend's own format. Cheap: reads metadata, loads nothing."""
        return self.detect(path) > 0

    def load_full_precision(self, path: Path, options: BackendOptions) -> LoadedModel:
        """Load ``path``, which :meth:`runs_full_precision` accepted, in this backend's runtime.

        :raises BackendError: when the runtime cannot load it after all.
        """
        return self.load(path, options)

    def scan_tensors(self, path: Path) -> Iterator[TensorHealth] | None:
        """One pass over every stored tensor, in file order, for the integrity check; None when
        this format cannot hand its tensors out. The default checks the dequantized rows of
        :meth:`tensor_reader`; a backend that can read the stored numbers directly overrides it.

        :raises BackendError: when the artifact's tensors cannot be read.
        """
        reader = self.tensor_reader(path)
        return None if reader is None else _scan(reader)


def _scan(reader: TensorReader) -> Iterator[TensorHealth]:
    with reader:
        for meta in list(reader.tensors):
            yield reader.health(meta.name)
