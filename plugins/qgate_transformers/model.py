"""A transformers causal LM on CPU or one CUDA device (safetensors only, never remote code).

Scoring runs one forward pass per chunk and asks the model for logits only at the scored
positions (``logits_to_keep`` with a tensor of indices where the installed transformers accepts
one), so the output layer does not run where nothing is scored; the model's own head then applies
any logit soft-capping or scaling. The shared skeleton (:mod:`qgate.scoring.sequence`) reduces
them with :func:`~qgate_transformers.reduction.summarize_tensor`: on the model's device for a
subject pass, and on the host with tail samples seeded from the tokens exactly as the GGUF
backend does for a reference pass, so the two agree.

:class:`TransformersModel` is the hf backend's model; the awq backend changes only how it loads.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qgate.backend import BackendOptions, ModelInfo
from qgate.errors import BackendError, UnsupportedKVCache
from qgate.scoring.sequence import LogitsBatch, Summarizer
from qgate_transformers.reduction import summarize_tensor
from qgate_transformers.runtime import (
    first_line,
    import_torch,
    import_transformers,
    resolve_device,
    resolve_dtype,
)
from qgate_transformers.tokenizer import HFTokenizedModel, eos_ids, load_tokenizer

#: KV cache types a transformers model honours: the cache is kept in the model's own dtype
DENSE_CACHES = ("f32", "f16", "bf16")


class TransformersModel(HFTokenizedModel):
    """A transformers causal LM; subclasses name their backend and may change how it loads."""

    #: the backend and pip extra named in errors
    backend_name: ClassVar[str]
    extra_name: ClassVar[str]
    device: str
    dtype: Any
    _model: Any
    _tok: Any

    def __init__(
        self, info: ModelInfo, options: BackendOptions, *, parent: TransformersModel | None = None
    ):
        torch = import_torch(self.backend_name, self.extra_name)
        self._torch = torch
        self.info = info
        self.options = options
        self.path = Path(info.path)
        if options.kv_cache not in DENSE_CACHES:
            raise UnsupportedKVCache(
                f"the {self.backend_name} backend keeps the KV cache in the model's dtype; "
                f"KV cache type {options.kv_cache!r} is not supported (use one of "
                f"{', '.join(DENSE_CACHES)})"
            )
        self.n_ctx = options.n_ctx
        self._parent = parent
        if parent is not None:
            self.device, self.dtype = parent.device, parent.dtype
            self._model, self._tok = parent._model, parent._tok
        else:
            if options.threads:
                torch.set_num_threads(options.threads)
            self.device = resolve_device(torch, options.extra.get("device"), self.backend_name)
            self.dtype = resolve_dtype(torch, options.extra.get("dtype"), self.device)
            self._model, self._tok = self._load()
        self._forward_params = set(inspect.signature(self._model.forward).parameters)
        output = self._model.get_output_embeddings()
        weight = getattr(output, "weight", None)
        self.n_vocab = int(weight.shape[0]) if weight is not None else int(info.vocab_size or 0)
        self._eos = eos_ids(self._tok, getattr(self._model, "generation_config", None))

    # -- loading ----------------------------------------------------------------------------
    def _load_kwargs(self) -> dict[str, Any]:
        transformers = import_transformers(self.backend_name, self.extra_name)
        major = int(str(transformers.__version__).split(".")[0])
        dtype_key = "dtype" if major >= 5 else "torch_dtype"
        return {
            dtype_key: self.dtype,
            "trust_remote_code": False,
            "use_safetensors": True,
            "local_files_only": True,
        }

    def _load(self) -> tuple[Any, Any]:
        transformers = import_transformers(self.backend_name, self.extra_name)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.path), **self._load_kwargs()
            )
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            raise BackendError(
                f"{self.path}: transformers could not load the model: {first_line(exc)}"
            ) from None
        tokenizer = load_tokenizer(self.path, self.backend_name, self.extra_name)
        if str(model.device) != self.device:
            model = model.to(self.device)
        model.eval()
        return model, tokenizer

    # -- forward passes ---------------------------------------------------------------------
    def _logits_at(self, tokens: Sequence[int], rows: np.ndarray) -> Any:
        """Logits [len(rows), vocab] at the given positions, as a torch tensor."""
        torch = self._torch
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        with torch.no_grad():
            if "logits_to_keep" in self._forward_params:
                keep = torch.as_tensor(rows, dtype=torch.long, device=self.device)
                logits = self._model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
                return logits[0]
            if "num_logits_to_keep" in self._forward_params:
                first = int(rows[0])
                logits = self._model(
                    input_ids=ids, use_cache=False, num_logits_to_keep=len(tokens) - first
                ).logits[0]
                return logits[torch.as_tensor(rows - first, device=logits.device)]
            logits = self._model(input_ids=ids, use_cache=False).logits[0]
            return logits[torch.as_tensor(rows, device=logits.device)]

    def scored_logits(
        self, tokens: Sequence[int], scored: np.ndarray
    ) -> Iterable[Sequence[LogitsBatch]]:
        """One forward pass over the whole chunk; logits only at the scored rows."""
        return [[(scored, self._logits_at(tokens, scored - 1))]]

    def summarizer(self) -> Summarizer:
        return summarize_tensor

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> TransformersModel:
        """Another context size on the same weights (the cache is allocated per pass)."""
        options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
        return type(self)(self.info, options, parent=self)

    def start_generation(
        self, prompt_tokens: list[int]
    ) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
        """The prompt in one forward pass with the cache on; each step extends that cache."""
        torch = self._torch
        keep = {"logits_to_keep": 1} if "logits_to_keep" in self._forward_params else {}
        state: dict[str, Any] = {}

        def next_row(ids: list[int], **kwargs: Any) -> np.ndarray:
            tensor = torch.tensor([ids], dtype=torch.long, device=self.device)
            with torch.no_grad():
                result = self._model(input_ids=tensor, use_cache=True, **kwargs)
            state["past"] = result.past_key_values
            return result.logits[0, -1].double().cpu().numpy()

        first = next_row(prompt_tokens, **keep)
        return first, lambda token: next_row([token], past_key_values=state["past"])

    def close(self) -> None:
        if getattr(self, "_parent", None) is None and getattr(self, "_model", None) is not None:
            self._model = None
            with contextlib.suppress(Exception):
                if self.device.startswith("cuda"):
                    self._torch.cuda.empty_cache()
