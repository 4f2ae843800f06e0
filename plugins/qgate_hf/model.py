"""A Hugging Face model loaded with transformers (safetensors only, never remote code).

Scoring runs one forward pass per chunk and asks the model for logits only at the scored
positions (``logits_to_keep`` with a tensor of indices where the installed transformers accepts
one), so the output layer does not run where nothing is scored; the model's own head then applies
any logit soft-capping or scaling. Logits are reduced by :func:`qgate_hf.scoring.summarize_tensor`:
on the model's device for a subject pass, and on the host with tail samples seeded from the tokens
exactly as the GGUF backend does for a reference pass, so the two agree.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Sequence
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
from qgate.scoring.logits import (
    generate_tokens,
    generation_budget,
    merge_scores,
    scored_positions,
    tail_rng,
)
from qgate_hf.scoring import summarize_tensor

#: KV cache types the hf backend honours: the cache is kept in the model's own dtype
DENSE_CACHES = ("f32", "f16", "bf16")
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def import_torch(backend: str = "hf", extra: str = "hf") -> Any:
    try:
        import torch
    except ImportError:
        raise MissingExtraError(backend, extra, "torch") from None
    return torch


def import_transformers(backend: str = "hf", extra: str = "hf") -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(backend, extra, "transformers") from None
    return transformers


def resolve_device(torch: Any, requested: Any, backend: str = "hf") -> str:
    """``extra["device"]``: cpu, cuda or cuda:N; default cuda when a GPU is visible."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(requested).lower()
    if device != "cpu" and not device.startswith("cuda"):
        raise BackendError(f"the {backend} backend runs on 'cpu' or 'cuda' (got device {device!r})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            f"the {backend} backend was asked for device {device!r} but torch sees no CUDA GPU "
            f"(torch {torch.__version__})"
        )
    return device


def resolve_dtype(torch: Any, requested: Any, device: str) -> Any:
    """``extra["dtype"]``: float16, bfloat16 or float32; default float32 on CPU, float16 on CUDA."""
    if requested is None:
        return torch.float32 if device == "cpu" else torch.float16
    name = _DTYPES.get(str(requested).lower())
    if name is None:
        raise BackendError(
            f"unknown dtype {requested!r}: use float16, bfloat16 or float32 (extra.dtype)"
        )
    return getattr(torch, name)


class HFModel(LoadedModel):
    """A transformers causal LM on CPU or one CUDA device."""

    backend_name = "hf"
    extra_name = "hf"
    device: str
    dtype: Any
    _model: Any
    _tok: Any

    def __init__(
        self,
        path: Path,
        info: ModelInfo,
        options: BackendOptions,
        *,
        parent: HFModel | None = None,
    ):
        torch = import_torch(self.backend_name, self.extra_name)
        self._torch = torch
        self.info = info
        self.options = options
        self.path = path
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
        self._bos = self._tok.bos_token_id
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

    # -- tokens -----------------------------------------------------------------------------
    @property
    def bos_token(self) -> int | None:
        return int(self._bos) if self._bos is not None else None

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return hf_tokenize(self._tok, text, add_bos=add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return hf_detokenize(self._tok, tokens)

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
        logits = self._logits_at(tokens, scored - 1)
        parts = [
            summarize_tensor(
                logits,
                token_array,
                scored,
                top_k=top_k,
                gather=gather,
                tail_samples=tail_samples,
                rng=rng,
            )
        ]
        return merge_scores(
            parts,
            positions=scored if positions is not None else None,
            with_gathered=gather is not None,
        )

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> HFModel:
        """Another context size on the same weights (the cache is allocated per pass)."""
        from dataclasses import replace

        options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
        return type(self)(self.path, self.info, options, parent=self)

    def generate(self, prompt: str, settings: GenerationSettings) -> Generation:
        started = time.perf_counter()
        torch = self._torch
        prompt_tokens = self.tokenize(prompt, add_bos=True)
        budget = generation_budget(len(prompt_tokens), self.n_ctx, settings)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in self._forward_params else {}
        state: dict[str, Any] = {}

        def next_row(ids: list[int], **kwargs: Any) -> np.ndarray:
            tensor = torch.tensor([ids], dtype=torch.long, device=self.device)
            result = self._model(input_ids=tensor, use_cache=True, **kwargs)
            state["past"] = result.past_key_values
            return result.logits[0, -1].double().cpu().numpy()

        with torch.no_grad():
            return generate_tokens(
                next_row(prompt_tokens, **keep),
                lambda token: next_row([token], past_key_values=state["past"]),
                settings=settings,
                budget=budget,
                is_eos=lambda token: token in self._eos,
                text_of=self.detokenize,
                prompt_tokens=len(prompt_tokens),
                started=started,
            )

    def close(self) -> None:
        if getattr(self, "_parent", None) is None and getattr(self, "_model", None) is not None:
            self._model = None
            with contextlib.suppress(Exception):
                if self.device.startswith("cuda"):
                    self._torch.cuda.empty_cache()


def load_tokenizer(path: Path, backend: str, extra: str) -> Any:
    """The folder's own tokenizer through transformers (local files only, no remote code)."""
    transformers = import_transformers(backend, extra)
    try:
        return transformers.AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise BackendError(f"{path}: could not load the tokenizer: {first_line(exc)}") from None


def hf_tokenize(tokenizer: Any, text: str, *, add_bos: bool) -> list[int]:
    """Token ids as the GGUF backend gives them: BOS first (if any) when ``add_bos``, nothing
    else added, and special-token text in ``text`` kept as text (llama.cpp's parse_special=False)."""
    try:
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    except TypeError:  # a tokenizer without split_special_tokens
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = [int(i) for i in ids]
    if add_bos and tokenizer.bos_token_id is not None:
        out.insert(0, int(tokenizer.bos_token_id))
    return out


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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
