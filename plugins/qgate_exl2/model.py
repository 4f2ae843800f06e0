"""An EXL2 model loaded with exllamav2 on a CUDA GPU.

Scoring feeds the chunk through ``model.forward`` with the KV cache (so a quantized cache is
what the later tokens of the chunk attend to), piece by piece, and keeps logits only for the
pieces that hold scored positions; rows are then selected and reduced on the GPU by
:func:`qgate_hf.scoring.summarize_tensor` (a reference pass draws its tail samples on the host,
with the same token-seeded sampler as the other backends).
Tokenization uses the folder's own tokenizer through transformers, exactly as the hf backend
does, so an EXL2 quant and its Hugging Face reference tokenize text identically.

The quantized caches (``ExLlamaV2Cache_Q8/Q6/Q4``) are created before ``load_autosplit`` at
load time, and with ``lazy=False`` after loading by :meth:`EXL2Model.reconfigure` (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import (
    BackendOptions,
    Generation,
    GenerationSettings,
    LoadedModel,
    ModelInfo,
    TokenScores,
)
from qgate.errors import BackendError, MissingExtraError, UnsupportedKVCache
from qgate.progress import Progress
from qgate.scoring.logits import (
    generate_tokens,
    generation_budget,
    merge_scores,
    scored_positions,
    tail_rng,
)
from qgate_hf.model import (
    eos_ids,
    first_line,
    hf_detokenize,
    hf_tokenize,
    import_torch,
    load_tokenizer,
)
from qgate_hf.scoring import summarize_tensor

#: qgate's KV cache type -> exllamav2's cache class
CACHE_CLASSES = {
    "f16": "ExLlamaV2Cache",
    "q8": "ExLlamaV2Cache_Q8",
    "q8_0": "ExLlamaV2Cache_Q8",
    "q6": "ExLlamaV2Cache_Q6",
    "q4": "ExLlamaV2Cache_Q4",
    "q4_0": "ExLlamaV2Cache_Q4",
}
_DEFAULT_PIECE = 2048  # tokens per forward call when options.batch_size is not set


def import_exllamav2() -> Any:
    """exllamav2, after checking for a CUDA GPU; says so when its extension will compile."""
    torch = import_torch("exl2", "exl2")
    if not torch.cuda.is_available():
        raise BackendError(
            f"the exl2 backend needs a CUDA GPU: torch {torch.__version__} sees none "
            "(EXL2 kernels run only on CUDA; `qgate inspect` and static checks work without one)"
        )
    if "exllamav2" not in sys.modules:
        if importlib.util.find_spec("exllamav2") is None:
            raise MissingExtraError("exl2", "exl2", "exllamav2")
        if importlib.util.find_spec("exllamav2_ext") is None:  # no prebuilt extension
            Progress().log(
                "compiling exllamav2's CUDA extension, about 2 minutes on first use "
                "(cached under ~/.cache/torch_extensions afterwards)"
            )
    try:
        import exllamav2
    except ImportError as exc:
        raise BackendError(f"exllamav2 could not be imported: {first_line(exc)}") from None
    return exllamav2


class EXL2Model(LoadedModel):
    _config: Any
    _model: Any
    _tok: Any
    _cache: Any

    def __init__(
        self,
        path: Path,
        info: ModelInfo,
        options: BackendOptions,
        *,
        parent: EXL2Model | None = None,
    ):
        if options.kv_cache not in CACHE_CLASSES:
            raise UnsupportedKVCache(
                f"the exl2 backend does not support KV cache type {options.kv_cache!r}; "
                f"use one of {', '.join(CACHE_CLASSES)}"
            )
        self._exl = import_exllamav2()
        self._torch = import_torch("exl2", "exl2")
        self.path = path
        self.info = info
        self.options = options
        self.n_ctx = options.n_ctx
        self._parent = parent
        cache_class = getattr(self._exl, CACHE_CLASSES[options.kv_cache])
        if parent is not None:
            self._config, self._model, self._tok = parent._config, parent._model, parent._tok
            if self.n_ctx > self._config.max_seq_len:
                raise NotImplementedError  # the caller loads again, with room for n_ctx
            # after loading, a cache must be allocated at once (lazy=False)
            self._cache = cache_class(self._model, max_seq_len=self.n_ctx, lazy=False)
        else:
            self._tok = load_tokenizer(path, "exl2", "exl2")
            try:
                config = self._exl.ExLlamaV2Config(str(path))
                # exllamav2 shapes attention by config.max_seq_len: it must equal the cache's
                # length (a longer context later loads again, see reconfigure)
                config.max_seq_len = self.n_ctx
                # load_autosplit runs a dummy forward of max_input_len tokens through the cache:
                # it must fit the cache, which holds n_ctx tokens
                config.max_input_len = min(int(config.max_input_len), self.n_ctx)
                config.max_attention_size = min(int(config.max_attention_size), self.n_ctx**2)
                model = self._exl.ExLlamaV2(config)
                # a quantized cache must exist before load_autosplit allocates the weights
                cache = cache_class(model, max_seq_len=self.n_ctx, lazy=True)
                model.load_autosplit(cache)
            except (AssertionError, RuntimeError, ValueError, KeyError, OSError) as exc:
                raise BackendError(
                    f"{path}: exllamav2 could not load the model: {first_line(exc)}"
                ) from None
            self._config, self._model, self._cache = config, model, cache
        self.n_vocab = int(self._config.vocab_size)
        # forward passes may not exceed the max_input_len the weights were loaded with
        self._piece = min(
            options.batch_size or _DEFAULT_PIECE, self.n_ctx, int(self._config.max_input_len)
        )
        self._eos = eos_ids(self._tok) | _config_eos(self._config)

    # -- tokens -----------------------------------------------------------------------------
    @property
    def bos_token(self) -> int | None:
        bos = self._tok.bos_token_id
        return int(bos) if bos is not None else None

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return hf_tokenize(self._tok, text, add_bos=add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return hf_detokenize(self._tok, tokens)

    # -- forward passes ---------------------------------------------------------------------
    def _forward(self, tokens: Sequence[int], *, logits: bool) -> Any:
        torch = self._torch
        ids = torch.tensor([list(tokens)], dtype=torch.long)  # exllamav2 takes ids on the CPU
        with torch.inference_mode():
            if not logits:
                self._model.forward(ids, self._cache, preprocess_only=True)
                return None
            return self._model.forward(ids, self._cache)[0]

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
        n = len(tokens)
        scored = scored_positions(n, self.n_ctx, start, positions)
        token_array = np.asarray(tokens, dtype=np.int64)
        rng = tail_rng(token_array)
        need = scored - 1  # logits at p predict token p + 1
        self._cache.current_seq_len = 0
        parts: list[TokenScores] = []
        done = 0  # scored rows reduced so far
        for offset in range(0, n, self._piece):
            piece = tokens[offset : offset + self._piece]
            lo = int(np.searchsorted(need, offset))
            hi = int(np.searchsorted(need, offset + len(piece)))
            if hi == lo:
                self._forward(piece, logits=False)
                continue
            logits = self._forward(piece, logits=True)
            rows = self._torch.as_tensor(need[lo:hi] - offset, device=logits.device)
            parts.append(
                summarize_tensor(
                    logits[rows],
                    token_array,
                    scored[lo:hi],
                    top_k=top_k,
                    gather=None if gather is None else gather[lo:hi],
                    tail_samples=tail_samples,
                    rng=rng,
                )
            )
            done = hi
        assert done == len(scored)
        return merge_scores(
            parts,
            positions=scored if positions is not None else None,
            with_gathered=gather is not None,
        )

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> EXL2Model:
        """A new cache (type and size) on the same weights; no second load."""
        options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
        return EXL2Model(self.path, self.info, options, parent=self)

    def generate(self, prompt: str, settings: GenerationSettings) -> Generation:
        started = time.perf_counter()
        prompt_tokens = self.tokenize(prompt, add_bos=True)
        budget = generation_budget(len(prompt_tokens), self.n_ctx, settings)
        self._cache.current_seq_len = 0
        if len(prompt_tokens) > 1:
            for offset in range(0, len(prompt_tokens) - 1, self._piece):
                end = min(offset + self._piece, len(prompt_tokens) - 1)
                self._forward(prompt_tokens[offset:end], logits=False)

        def next_row(tokens: list[int]) -> np.ndarray:
            return self._forward(tokens, logits=True)[-1].double().cpu().numpy()

        return generate_tokens(
            next_row(prompt_tokens[-1:]),
            lambda token: next_row([token]),
            settings=settings,
            budget=budget,
            is_eos=lambda token: token in self._eos,
            text_of=self.detokenize,
            prompt_tokens=len(prompt_tokens),
            started=started,
        )

    def close(self) -> None:
        if getattr(self, "_parent", None) is None and getattr(self, "_model", None) is not None:
            with contextlib.suppress(AttributeError, RuntimeError):
                self._model.unload()
            self._model = None
        self._cache = None


def _config_eos(config: Any) -> set[int]:
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        return {eos}
    if isinstance(eos, (list, tuple)):
        return {int(i) for i in eos}
    return set()
