"""An EXL2 model loaded with exllamav2 on a CUDA GPU.

Scoring feeds the chunk through ``model.forward`` with the KV cache (so a quantized cache is
what the later tokens of the chunk attend to), piece by piece, and keeps logits only for the
pieces that hold scored positions; the shared skeleton (:mod:`qgate.scoring.sequence`) then
reduces the scored rows on the GPU with :func:`qgate_transformers.reduction.summarize_tensor` (a
reference pass draws its tail samples on the host, with the same token-seeded sampler as the
other backends). Tokenization uses the folder's own tokenizer through transformers, exactly as
the hf backend does, so an EXL2 quant and its Hugging Face reference tokenize text identically.

The caches (``ExLlamaV2Cache``, ``_Q8/_Q6/_Q4``) are created lazily before ``load_autosplit`` at
load time, which allocates them alongside the weights; a cache made after loading by
:meth:`EXL2Model.reconfigure` has no autosplit to allocate it, so it is made with ``lazy=False``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import BackendOptions, ModelInfo
from qgate.errors import BackendError, MissingExtraError, UnsupportedKVCache
from qgate.progress import Progress
from qgate.scoring.sequence import LogitsBatch, Summarizer
from qgate_transformers.reduction import summarize_tensor
from qgate_transformers.runtime import first_line, import_torch
from qgate_transformers.tokenizer import HFTokenizedModel, eos_ids, load_tokenizer

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


class EXL2Model(HFTokenizedModel):
    _config: Any
    _model: Any
    _tok: Any
    _cache: Any

    def __init__(
        self, info: ModelInfo, options: BackendOptions, *, parent: EXL2Model | None = None
    ):
        if options.kv_cache not in CACHE_CLASSES:
            raise UnsupportedKVCache(
                f"the exl2 backend does not support KV cache type {options.kv_cache!r}; "
                f"use one of {', '.join(CACHE_CLASSES)}"
            )
        self._exl = import_exllamav2()
        self._torch = import_torch("exl2", "exl2")
        self.path = path = Path(info.path)
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
        self._eos = eos_ids(self._tok, self._config)  # the tokenizer's and the config's

    # -- forward passes ---------------------------------------------------------------------
    def _forward(self, tokens: Sequence[int], *, logits: bool) -> Any:
        torch = self._torch
        ids = torch.tensor([list(tokens)], dtype=torch.long)  # exllamav2 takes ids on the CPU
        with torch.inference_mode():
            if not logits:
                self._model.forward(ids, self._cache, preprocess_only=True)
                return None
            return self._model.forward(ids, self._cache)[0]

    def scored_logits(
        self, tokens: Sequence[int], scored: np.ndarray
    ) -> Iterator[list[LogitsBatch]]:
        """The chunk through the cache piece by piece; logits only for pieces with scored rows."""
        need = scored - 1  # logits at p predict token p + 1
        self._cache.current_seq_len = 0
        for offset in range(0, len(tokens), self._piece):
            piece = tokens[offset : offset + self._piece]
            lo = int(np.searchsorted(need, offset))
            hi = int(np.searchsorted(need, offset + len(piece)))
            if hi == lo:
                self._forward(piece, logits=False)
                continue
            logits = self._forward(piece, logits=True)
            rows = self._torch.as_tensor(need[lo:hi] - offset, device=logits.device)
            yield [(scored[lo:hi], logits[rows])]

    def summarizer(self) -> Summarizer:
        return summarize_tensor

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> EXL2Model:
        """A new cache (type and size) on the same weights; no second load."""
        options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
        return EXL2Model(self.info, options, parent=self)

    def start_generation(
        self, prompt_tokens: list[int]
    ) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
        """All but the prompt's last token through the cache without logits, piece by piece;
        the last one, then each new token, with logits."""
        self._cache.current_seq_len = 0
        if len(prompt_tokens) > 1:
            for offset in range(0, len(prompt_tokens) - 1, self._piece):
                end = min(offset + self._piece, len(prompt_tokens) - 1)
                self._forward(prompt_tokens[offset:end], logits=False)

        def next_row(tokens: list[int]) -> np.ndarray:
            return self._forward(tokens, logits=True)[-1].double().cpu().numpy()

        return next_row(prompt_tokens[-1:]), lambda token: next_row([token])

    def close(self) -> None:
        if getattr(self, "_parent", None) is None and getattr(self, "_model", None) is not None:
            with contextlib.suppress(AttributeError, RuntimeError):
                self._model.unload()
            self._model = None
        self._cache = None
