"""A deterministic fake backend, for testing qgate and third-party check plugins.

A fake model is a small JSON file whose knobs make checks pass or fail on demand::

    from qgate.testing import write_fake_model

    ref = write_fake_model(tmp_path / "ref.fake.json")
    bad = write_fake_model(tmp_path / "bad.fake.json", noise=2.0, bits_per_weight=2.6)

then ``qgate check bad.fake.json --reference ref.fake.json --policy production``.

The model is a bigram language model over bytes (token = byte, plus BOS and EOS), its table drawn
from ``seed``. Knobs:

``noise``          std of a fixed perturbation added to the logits: the quantization damage.
``kv_decay``       extra perturbation per 1,024 tokens of position when the KV cache is quantized
                   (q8: half as much as q4): a long-context cache that degrades late.
``kv_noise``       extra perturbation at every position when the KV cache is quantized: a cache
                   that is damaged uniformly (as q4_0 on Gemma 3's sliding-window layers).
``nan_after``      logits are NaN from this position on.
``repeat_after``   generation starts looping after this many bytes (tokens).
``delay``          seconds per token of scoring and generation (for speed checks).
``jitter``         timing noise: every ``delay`` sleep is scaled by a factor drawn uniformly from
                   ``[1 - jitter, 1 + jitter]``, from a generator seeded by ``jitter_seed`` and
                   the backend options' ``seed`` (so runs that differ in ``seed`` differ in noise,
                   and the same run always gets the same noise).
``fail_load``      loading raises a ``BackendError`` with this message.
``answers``        question -> answer: a prompt ending in ``Q: <question>\nA:`` is answered so
                   (for task-accuracy tests); other questions get the usual word salad.
``metadata``       overrides for :class:`~qgate.backend.ModelInfo` fields (``bits_per_weight``,
                   ``architecture``, ``expert_count``, ``identity``, ``tensor_type_by_name``, ...);
                   ``tokenizer`` and ``config`` take the fields to change in the fake's own
                   :class:`~qgate.backend.TokenizerFacts` and :class:`~qgate.backend.ModelConfig`
                   (``{"config": {"rope_base": 1e6}}``).
``tensor_faults``  tensor name -> ``nan``, ``zero`` or ``short``: what the integrity scan finds.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qgate.backend import (
    Backend,
    BackendOptions,
    Generation,
    GenerationSettings,
    ModelConfig,
    ModelInfo,
    SpecialToken,
    TensorHealth,
    TokenizerFacts,
)
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate.scoring.sequence import BatchScoredModel, LogitsBatch

MAGIC_KEY = "qgate_fake_model"
BOS, EOS, VOCAB = 256, 257, 258
_KV_FACTOR = {
    "q8_0": 0.5,
    "q8": 0.5,
    "q6": 0.6,
    "q5_1": 0.7,
    "q5_0": 0.75,
    "q4_1": 0.9,
    "q4_0": 1.0,
    "q4": 1.0,
    "iq4_nl": 1.0,
}
DEFAULT_KNOBS: dict[str, Any] = {
    "seed": 0,
    "noise": 0.0,
    "noise_seed": 1,
    "kv_decay": 0.0,
    "kv_noise": 0.0,
    "nan_after": None,
    "repeat_after": None,
    "delay": 0.0,
    "jitter": 0.0,
    "jitter_seed": 0,
    "fail_load": None,
    "answers": {},
    "metadata": {},
    "tensor_faults": {},
}


def write_fake_model(path: Path, **knobs: Any) -> Path:
    """Write a fake model file with ``knobs`` (see the module docstring) and return its path."""
    unknown = set(knobs) - set(DEFAULT_KNOBS)
    if unknown:
        raise TypeError(f"unknown fake-model knobs: {', '.join(sorted(unknown))}")
    path.write_text(json.dumps({MAGIC_KEY: knobs}, indent=2, sort_keys=True))
    return path


def read_knobs(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path}: not a readable fake model: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(MAGIC_KEY), dict):
        raise BackendError(f"{path}: not a fake model (no {MAGIC_KEY!r} object)")
    knobs = {**DEFAULT_KNOBS, **data[MAGIC_KEY]}
    unknown = set(knobs) - set(DEFAULT_KNOBS)
    if unknown:
        raise BackendError(f"{path}: unknown fake-model knobs: {', '.join(sorted(unknown))}")
    return knobs


class FakeBackend(Backend):
    name = "fake"
    description = "deterministic fake models for tests (qgate.testing)"

    def detect(self, path: Path) -> float:
        """Certain for a small file that holds the fake model's key, else 0."""
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return 0.0
        with path.open("rb") as handle:
            return 1.0 if MAGIC_KEY.encode() in handle.read(4096) else 0.0

    def inspect(self, path: Path) -> ModelInfo:
        knobs = read_knobs(path)
        info = ModelInfo(
            path=str(path),
            format="fake",
            label=path.name.removesuffix(".json").removesuffix(".fake"),
            architecture="fake-bigram",
            parameter_count=VOCAB * VOCAB,
            file_type="F16",
            bits_per_weight=16.0,
            tensor_types={"F16": 1},
            tensor_type_by_name={"output.weight": "F16"},
            expert_count=0,
            context_length=4096,
            vocab_size=VOCAB,
            identity={"name": path.stem},
            tokenizer_hash="fake-bytes-v1",
            file_size=path.stat().st_size,
            tokenizer=TokenizerFacts(
                family="fake",
                model="bytes",
                components={"vocabulary": "fake-bytes-v1"},
                special={"bos": SpecialToken(BOS, "<s>"), "eos": SpecialToken(EOS, "</s>")},
                add_bos=True,
                add_eos=False,
            ),
            config=ModelConfig(
                runtime="fake",
                context_length=4096,
                rope_base=10000.0,
                rope_scaling="none",
                layers=1,
                heads=1,
                kv_heads=1,
                vocab_size=VOCAB,
            ),
        )
        known = {f.name for f in fields(ModelInfo)}
        for key, value in knobs["metadata"].items():
            if key not in known:
                raise BackendError(f"{path}: unknown metadata field {key!r} in fake model")
            if key in ("tokenizer", "config") and isinstance(value, dict):
                value = _changed(getattr(info, key), value)
            setattr(info, key, value)
        return info

    def scan_tensors(self, path: Path) -> Iterator[TensorHealth]:
        """The fake's one tensor, healthy unless ``tensor_faults`` says otherwise."""
        faults = read_knobs(path)["tensor_faults"]
        for name in ("output.weight", *sorted(set(faults) - {"output.weight"})):
            fault = faults.get(name)
            yield TensorHealth(
                name,
                (VOCAB, VOCAB),
                "F16",
                VOCAB * VOCAB,
                non_finite=VOCAB if fault == "nan" else 0,
                all_zero=fault == "zero",
                problem="the file ends 1024 bytes short of it" if fault == "short" else "",
            )

    def load(self, path: Path, options: BackendOptions) -> FakeModel:
        knobs = read_knobs(path)
        if knobs["fail_load"]:
            raise BackendError(f"{path}: {knobs['fail_load']}")
        return FakeModel(self.inspect(path), knobs, options)


def _changed(record: Any, changes: dict[str, Any]) -> Any:
    """``record`` (the fake's tokenizer facts or config) with ``changes``; special tokens given
    as ``{"eos": {"id": 0, "text": "<pad>"}}``."""
    if "special" in changes:
        changes = {
            **changes,
            "special": {
                role: SpecialToken(**token) if isinstance(token, dict) else token
                for role, token in changes["special"].items()
            },
        }
    return replace(record, **changes)


class FakeModel(BatchScoredModel):
    def __init__(self, info: ModelInfo, knobs: dict[str, Any], options: BackendOptions):
        self.info = info
        self.knobs = knobs
        self.options = options
        self.n_ctx = options.n_ctx
        self.n_vocab = VOCAB
        rng = np.random.default_rng(knobs["seed"])
        self.table = (rng.standard_normal((VOCAB, VOCAB)) * 2.5).astype(np.float32)
        self.perturbation = (
            np.random.default_rng(knobs["noise_seed"] + 10_000)
            .standard_normal((VOCAB, VOCAB))
            .astype(np.float32)
        )
        self.kv_factor = _KV_FACTOR.get(options.kv_cache, 0.0)
        self._jitter = np.random.default_rng([int(knobs["jitter_seed"]), int(options.seed)])
        self.calls: dict[str, int] = {"score": 0, "generate": 0}

    def _sleep(self, seconds: float) -> None:
        """Stand in for compute time: ``seconds``, scaled by the ``jitter`` noise."""
        if self.knobs["jitter"]:
            seconds *= max(0.0, 1.0 + self.knobs["jitter"] * self._jitter.uniform(-1.0, 1.0))
        if seconds > 0:
            time.sleep(seconds)

    @property
    def bos_token(self) -> int:
        return BOS

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return ([BOS] if add_bos else []) + list(text.encode("utf-8"))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")

    def logits(self, tokens: Sequence[int], positions: np.ndarray) -> np.ndarray:
        """Logits predicting the token after each of ``positions``."""
        prev = np.asarray(tokens, dtype=np.int64)[positions]
        scale = (
            self.knobs["noise"]
            + self.knobs["kv_noise"] * self.kv_factor
            + self.knobs["kv_decay"] * self.kv_factor * positions / 1024.0
        )
        out = self.table[prev] + scale[:, None].astype(np.float32) * self.perturbation[prev]
        if self.knobs["nan_after"] is not None:
            out[positions >= self.knobs["nan_after"]] = np.nan
        return out

    def scored_logits(
        self, tokens: Sequence[int], scored: np.ndarray
    ) -> Iterable[Sequence[LogitsBatch]]:
        """All scored rows in one batch; ``delay`` stands in for the forward pass."""
        self.calls["score"] += 1
        self._sleep(self.knobs["delay"] * len(tokens))
        yield [(scored, self.logits(tokens, scored - 1))]

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> FakeModel:
        options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
        return FakeModel(self.info, self.knobs, options)

    def generate(self, prompt: str, settings: GenerationSettings) -> Generation:
        """A deterministic, healthy-looking continuation; loops after ``repeat_after`` bytes."""
        self.calls["generate"] += 1
        started = time.perf_counter()
        question = re.search(r"Q: ([^\n]*)\nA:\s*$", prompt)
        if question and question.group(1) in self.knobs["answers"]:
            text = " " + str(self.knobs["answers"][question.group(1)])
            tokens = list(text.encode())[: settings.max_tokens]
            return Generation(text, tokens, "stop", prompt_tokens=len(prompt.encode()) + 1)
        seed = (
            zlib.crc32(prompt.encode())
            ^ self.knobs["seed"]
            ^ (settings.seed if settings.temperature > 0 else 0)
        )
        rng = np.random.default_rng(seed)
        # healthy output ends well inside the budget (bytes are tokens here) with an EOS
        budget = settings.max_tokens
        target = int(rng.integers(min(24, budget // 2), max(25, budget * 3 // 4)))
        alphabet = sorted({c for c in prompt if c.isalpha()}) or list("abcdefghijklmnopqrstuvwxyz")
        if len(alphabet) < 8:
            alphabet = list("abcdefghijklmnopqrstuvwxyz")
        repeat_after = self.knobs["repeat_after"]
        text = ""
        finish: Literal["stop", "length", "eos"] = "eos"
        while True:
            if repeat_after is not None and len(text.encode()) >= repeat_after:
                loop = " ".join(text.split()[-3:]) + " "
                while len(text.encode()) < budget:
                    text += loop
                text, finish = text.encode()[:budget].decode("utf-8", "ignore"), "length"
                break
            word = "".join(
                alphabet[int(i)] for i in rng.integers(len(alphabet), size=int(rng.integers(2, 8)))
            )
            if len((text + word).encode()) >= target:
                break
            text += word + " "
        for stop in settings.stop:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        text = text.rstrip() if finish == "eos" else text
        tokens = list(text.encode())[: settings.max_tokens]
        self._sleep(self.knobs["delay"] * (len(tokens) + len(prompt)))
        return Generation(
            text,
            tokens,
            finish,
            prompt_tokens=len(prompt.encode()) + 1,
            seconds=time.perf_counter() - started,
        )


@hookimpl
def qgate_backends() -> list[Backend]:
    return [FakeBackend()]
