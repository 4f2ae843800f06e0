"""The folder's own tokenizer through transformers, used the way the GGUF backend tokenizes.

The hf, awq and exl2 backends' models all tokenize and generate through
:class:`HFTokenizedModel`, so a quant and its Hugging Face reference cut the same text into the
same chunks and stop generating at the same tokens.
"""

from __future__ import annotations

import functools
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import Generation, GenerationSettings
from qgate.errors import BackendError
from qgate.scoring.logits import generate_tokens, generation_budget
from qgate.scoring.sequence import BatchScoredModel
from qgate_transformers.runtime import first_line, import_transformers


def load_tokenizer(path: Path, backend: str, extra: str) -> Any:
    """The folder's own tokenizer through transformers (local files only, no remote code)."""
    transformers = import_transformers(backend, extra)
    try:
        return transformers.AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise BackendError(f"{path}: could not load the tokenizer: {first_line(exc)}") from None


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer itself puts before and after a text (its own flags:
    ``add_bos_token``, its post-processor), as ``(prefix, suffix)`` ids.

    This is the one BOS convention every backend follows, llama.cpp's: a BOS is added when the
    model's own tokenizer adds one, not whenever it names one. Qwen 2.5 names
    ``<|endoftext|>`` as its BOS and adds none; a GGUF of it says ``add_bos_token = false``.
    """
    plain = [int(i) for i in _encode(tokenizer, "a", special=False)]
    full = [int(i) for i in _encode(tokenizer, "a", special=True)]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise BackendError(
        "the tokenizer's special tokens cannot be told apart from the text: "
        f"{full} with them, {plain} without"
    )


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    """Token ids of ``text``; special-token text in it kept as text (llama.cpp's
    parse_special=False)."""
    try:
        return list(
            tokenizer(text, add_special_tokens=special, split_special_tokens=True)["input_ids"]
        )
    except TypeError:  # a tokenizer without split_special_tokens
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def hf_tokenize(
    tokenizer: Any, text: str, *, add_bos: bool, affixes: tuple[list[int], list[int]]
) -> list[int]:
    """Token ids as the GGUF backend gives them: with ``add_bos``, the special tokens the
    tokenizer adds itself (``affixes``, from :func:`special_affixes`) around the text; without,
    the text alone."""
    ids = [int(i) for i in _encode(tokenizer, text, special=False)]
    if not add_bos:
        return ids
    prefix, suffix = affixes
    return [*prefix, *ids, *suffix]


def hf_detokenize(tokenizer: Any, tokens: Sequence[int]) -> str:
    return str(
        tokenizer.decode(list(tokens), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    )


def eos_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Every token id that ends generation (the generation config's and the tokenizer's)."""
    ids: set[int] = set()
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return ids


class HFTokenizedModel(BatchScoredModel):
    """A loaded model with its folder's tokenizer (``_tok``) and end-of-generation ids
    (``_eos``); a subclass runs the prompt (:meth:`start_generation`), the shared sampling loop
    does the rest."""

    _tok: Any
    _eos: set[int]

    @functools.cached_property
    def _affixes(self) -> tuple[list[int], list[int]]:
        return special_affixes(self._tok)

    @property
    def bos_token(self) -> int | None:
        """The token every chunk starts with: None when the tokenizer adds no BOS itself."""
        prefix = self._affixes[0]
        return prefix[0] if prefix else None

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return hf_tokenize(self._tok, text, add_bos=add_bos, affixes=self._affixes)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return hf_detokenize(self._tok, tokens)

    @abstractmethod
    def start_generation(
        self, prompt_tokens: list[int]
    ) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
        """Run the prompt: the logits row after it (float64) and a step that feeds one more
        token and returns the next row."""

    def generate(self, prompt: str, settings: GenerationSettings) -> Generation:
        started = time.perf_counter()
        prompt_tokens = self.tokenize(prompt, add_bos=True)
        # a prompt that leaves no room fails here, before anything is decoded
        budget = generation_budget(len(prompt_tokens), self.n_ctx, settings)
        first, step = self.start_generation(prompt_tokens)
        return generate_tokens(
            first,
            step,
            settings=settings,
            budget=budget,
            is_eos=lambda token: token in self._eos,
            text_of=self.detokenize,
            prompt_tokens=len(prompt_tokens),
            started=started,
        )
