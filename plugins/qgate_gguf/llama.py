"""A GGUF model loaded through llama-cpp-python's low-level API.

Scoring fills a ``llama_batch`` and sets ``logits[i]`` only for the positions that are scored:
the output layer (262k x hidden for Gemma 3) then runs only there instead of at every position,
as ``Llama(logits_all=True)`` would. The shared skeleton (:mod:`qgate.scoring.sequence`) reduces
the logits to top-k and gathered log-probabilities block by block, so memory stays flat whatever
the vocabulary. With the model on a GPU the host-side reduction is what is left: a subject pass
(no tail samples) then reduces the blocks of one decode call on several threads
(``extra.reduce_threads``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qgate.backend import BackendOptions, Generation, GenerationSettings, ModelInfo
from qgate.errors import BackendError, CheckError, MissingExtraError, UnsupportedKVCache
from qgate.scoring.logits import generate_tokens, generation_budget
from qgate.scoring.sequence import BatchMap, BatchScoredModel, LogitsBatch

_ROWS_PER_BLOCK = 64  # logits rows reduced at a time: 64 x 262k floats = 64 MiB for Gemma 3
# llama.cpp keeps two logits buffers per context, each sized for one decode call's outputs: the
# output buffer and the output layer's tensor in the compute buffer. At Gemma 3's 262k vocabulary
# a 512-token call costs 2 x 512 MiB, so by default a call is cut to fit this budget (128 tokens
# for Gemma 3, 512 for a 32k vocabulary): smaller calls are no slower per chunk.
_LOGITS_BUDGET = 128 << 20
_MAX_BATCH = 512
_MIN_BATCH = 32
_MAX_REDUCE_THREADS = 8  # numpy releases the GIL in the row reductions; more threads gain little
_init_lock = threading.Lock()
_initialised = False
_log_lines: deque[str] = deque(maxlen=40)
_log_callback: Any = None


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise MissingExtraError("gguf", "gguf", "llama-cpp-python") from None
    return llama_cpp


def _initialise(llama_cpp: Any) -> None:
    """Initialise llama.cpp once and keep its log out of the way (but keep it for errors)."""
    global _initialised, _log_callback
    with _init_lock:
        if _initialised:
            return

        @llama_cpp.llama_log_callback
        def on_log(level: int, text: bytes, user_data: Any) -> None:
            line = text.decode("utf-8", errors="replace").rstrip()
            if line:
                _log_lines.append(line)
            if os.environ.get("QGATE_LLAMA_LOG"):
                print(line, flush=True)

        _log_callback = on_log  # keep a reference: llama.cpp calls it for the life of the process
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _initialised = True


def _recent_log(pattern: str = "") -> str:
    lines = (
        [line for line in _log_lines if pattern.lower() in line.lower()]
        if pattern
        else list(_log_lines)
    )
    errors = [
        line
        for line in lines
        if "error" in line.lower() or "failed" in line.lower() or "unknown" in line.lower()
    ]
    picked = errors[-3:] or lines[-3:]
    return "; ".join(picked)


GGML_TYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}


def reduce_threads(options: BackendOptions) -> int:
    """Threads that reduce the logits of one decode call (``extra.reduce_threads``).

    Default: one on the CPU, where llama.cpp's own threads are the bottleneck; with layers on the
    GPU the forward pass is fast and the reduction on the host dominates, so up to
    ``_MAX_REDUCE_THREADS``. Only subject passes use them: a reference pass draws its tail
    samples from one random stream, block after block.
    """
    requested = options.extra.get("reduce_threads")
    if requested is not None:
        try:
            return max(1, int(requested))
        except (TypeError, ValueError):
            raise BackendError(
                f"extra.reduce_threads must be a number (got {requested!r})"
            ) from None
    if options.gpu_layers == 0:
        return 1
    return max(1, min(_MAX_REDUCE_THREADS, options.threads or os.cpu_count() or 1))


def default_batch(n_vocab: int) -> int:
    """Tokens per decode call: a power of two whose logits fit ``_LOGITS_BUDGET``."""
    fits = _LOGITS_BUDGET // (4 * max(n_vocab, 1))
    batch = _MAX_BATCH
    while batch > _MIN_BATCH and batch > fits:
        batch //= 2
    return batch


class LlamaCppModel(BatchScoredModel):
    def __init__(
        self, info: ModelInfo, options: BackendOptions, *, parent: LlamaCppModel | None = None
    ):
        path = Path(info.path)
        L = import_llama_cpp()
        _initialise(L)
        self._L = L
        self.info = info
        self.options = options
        if options.kv_cache not in GGML_TYPES:
            raise UnsupportedKVCache(
                f"the gguf backend does not support KV cache type {options.kv_cache!r}; "
                f"use one of {', '.join(GGML_TYPES)}"
            )
        _log_lines.clear()
        # a context made by reconfigure() shares its parent's weights and keeps the parent alive
        self._parent = parent
        self._model: Any
        if parent is not None:
            self._model = parent._model
        else:
            mparams = L.llama_model_default_params()
            mparams.n_gpu_layers = 999 if options.gpu_layers < 0 else options.gpu_layers
            self._model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise BackendError(
                f"{path}: llama.cpp could not load the model: {_recent_log() or 'no reason given'}"
            )
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.n_ctx = options.n_ctx
        self.n_batch = min(options.batch_size or default_batch(self.n_vocab), options.n_ctx)
        threads = options.threads or os.cpu_count() or 1
        cparams = L.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = self.n_batch
        # the physical batch bounds the attention scratch memory at long contexts
        cparams.n_ubatch = min(self.n_batch, _MAX_BATCH)
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.type_k = GGML_TYPES[options.kv_cache]
        cparams.type_v = GGML_TYPES[options.kv_cache]
        cparams.no_perf = True
        if options.kv_cache not in ("f32", "f16", "bf16"):
            # llama.cpp needs flash attention for a quantized V cache
            cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            if parent is None:
                L.llama_model_free(self._model)
            self._model = None
            raise BackendError(
                f"{path}: llama.cpp could not create a context: {_recent_log() or 'no reason given'}"
            )
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        self._reduce_threads = reduce_threads(options)
        self._pool: ThreadPoolExecutor | None = None
        self._bos = int(L.llama_vocab_bos(self._vocab))
        # llama.cpp (and llama-perplexity) put a BOS first only when the vocabulary says so:
        # Qwen 2.5 names a BOS token but sets tokenizer.ggml.add_bos_token = false
        self._add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))

    # -- tokens -----------------------------------------------------------------------------
    @property
    def bos_token(self) -> int | None:
        """The token every chunk starts with: None when the model adds no BOS."""
        return self._bos if self._bos >= 0 and self._add_bos else None

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        L = self._L
        data = text.encode("utf-8")
        capacity = len(data) + 16
        while True:
            buffer = (L.llama_token * capacity)()
            n = L.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_bos, False)
            if n >= 0:
                return list(buffer[:n])
            capacity = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n]

    # -- forward passes ---------------------------------------------------------------------
    def _clear(self) -> None:
        self._L.llama_memory_clear(self._L.llama_get_memory(self._ctx), True)

    def _decode(self, tokens: Sequence[int], first_pos: int, want_logits: Sequence[bool]) -> int:
        """Decode ``tokens`` at positions ``first_pos...``; returns the number of outputs."""
        batch = self._batch
        n = len(tokens)
        outputs = 0
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = first_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = want_logits[i]
            outputs += bool(want_logits[i])
        batch.n_tokens = n
        status = self._L.llama_decode(self._ctx, batch)
        if status != 0:
            raise CheckError(
                f"llama_decode failed with status {status}: {_recent_log() or 'no reason given'}"
            )
        return outputs

    def _output_logits(self, rows: int) -> np.ndarray:
        pointer = self._L.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.n_vocab))

    def scored_logits(
        self, tokens: Sequence[int], scored: np.ndarray
    ) -> Iterator[list[LogitsBatch]]:
        """One group per decode call, cut into blocks of ``_ROWS_PER_BLOCK`` rows: views into
        llama.cpp's logits buffer, which the next decode call overwrites."""
        n = len(tokens)
        # logits at position p predict token p + 1: the output layer runs only where needed
        need = np.zeros(n, dtype=bool)
        need[scored - 1] = True
        self._clear()
        for offset in range(0, n, self.n_batch):
            piece = tokens[offset : offset + self.n_batch]
            want = need[offset : offset + len(piece)]
            outputs = self._decode(piece, offset, want.tolist())
            if outputs == 0:
                continue
            predicted = offset + np.flatnonzero(want) + 1  # the positions the rows score
            logits = self._output_logits(outputs)
            yield [
                (predicted[row : row + _ROWS_PER_BLOCK], logits[row : row + _ROWS_PER_BLOCK])
                for row in range(0, outputs, _ROWS_PER_BLOCK)
            ]

    def batch_map(self, tail_samples: int) -> BatchMap:
        """A subject pass reduces the blocks of one decode call on ``reduce_threads`` threads; a
        reference pass draws its tail samples from one random stream, so in order."""
        pool = self._reduce_pool() if tail_samples == 0 else None
        return map if pool is None else pool.map

    def _reduce_pool(self) -> ThreadPoolExecutor | None:
        if self._reduce_threads <= 1:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._reduce_threads, thread_name_prefix="qgate-reduce")
        return self._pool

    def reconfigure(self, *, n_ctx: int, kv_cache: str) -> LlamaCppModel:
        """A new llama.cpp context on the same weights: no second load, no second copy."""
        options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
        return LlamaCppModel(self.info, options, parent=self)

    def generate(self, prompt: str, settings: GenerationSettings) -> Generation:
        started = time.perf_counter()
        L = self._L
        prompt_tokens = self.tokenize(prompt, add_bos=True)
        budget = generation_budget(len(prompt_tokens), self.n_ctx, settings)
        self._clear()
        for offset in range(0, len(prompt_tokens), self.n_batch):
            piece = prompt_tokens[offset : offset + self.n_batch]
            last = offset + len(piece) == len(prompt_tokens)
            self._decode(piece, offset, [last and i == len(piece) - 1 for i in range(len(piece))])
        raw = bytearray()
        position = len(prompt_tokens)

        def last_row() -> np.ndarray:
            return np.array(self._output_logits(1)[0], dtype=np.float64)

        def step(token: int) -> np.ndarray:
            nonlocal position
            self._decode([token], position, [True])
            position += 1
            return last_row()

        def text_of(out: list[int]) -> str:
            raw.extend(self._piece(out[-1]))  # pieces are bytes: a character may span tokens
            return raw.decode("utf-8", errors="replace")

        return generate_tokens(
            last_row(),
            step,
            settings=settings,
            budget=budget,
            is_eos=lambda token: bool(L.llama_vocab_is_eog(self._vocab, token)),
            text_of=text_of,
            prompt_tokens=len(prompt_tokens),
            started=started,
        )

    def close(self) -> None:
        L = self._L
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
            self._pool = None
        if getattr(self, "_batch", None) is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            if getattr(self, "_parent", None) is None:  # contexts from reconfigure() share weights
                L.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown the library may be gone
            self.close()
