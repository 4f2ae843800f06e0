"""A model artifact in a run: inspected up front, loaded at most once, and counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from qgate.backend import Backend, BackendOptions, LoadedModel, ModelInfo
from qgate.errors import BackendError, QgateError
from qgate.hashing import DigestIndex
from qgate.instruments import Instruments


class ModelHandle:
    """One subject or reference: metadata now, the weights only when a check needs them."""

    def __init__(
        self,
        path: Path,
        backend: Backend,
        options: BackendOptions,
        *,
        digests: DigestIndex,
        instruments: Instruments,
    ):
        self.path = path
        self.backend = backend
        self.options = options
        self._digests = digests
        self._instruments = instruments
        self._model: LoadedModel | None = None
        self._digest: str | None = None
        started = time.perf_counter()
        try:
            self.info: ModelInfo = backend.inspect(path)
        except QgateError:
            raise
        except Exception as exc:  # hostile metadata (an overflowing number, a bad string)
            raise BackendError(
                f"{path}: the {backend.name} backend could not read its metadata "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        instruments.timings["inspect"] += time.perf_counter() - started
        if not self.info.label:
            self.info.label = path.name

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> LoadedModel:
        """The loaded model; the first access loads it (once per run)."""
        if self._model is None:
            self._instruments.progress.log(f"loading {self.info.label} ({self.backend.name})")
            started = time.perf_counter()
            self._model = self.backend.load(self.path, self.options)
            elapsed = time.perf_counter() - started
            self._instruments.timings["load"] += elapsed
            self._instruments.counters["model_loads"] += 1
            self._instruments.progress.log(f"loaded {self.info.label} in {elapsed:.1f}s")
        return self._model

    @property
    def digest(self) -> str:
        """sha256 of the artifact's bytes, read once per run (never from a stored index)."""
        if self._digest is None:
            started = time.perf_counter()
            self._digest = self._digests.digest(self.path, progress=self._hash_progress)
            self._instruments.timings["hash"] += time.perf_counter() - started
        return self._digest

    def _hash_progress(self, done: int, total: int) -> None:
        if total > 256 << 20:  # small files hash in a blink: no progress line for them
            self._instruments.progress.update(
                f"hashing {self.info.label}", done >> 20, total >> 20, "MiB"
            )

    @contextmanager
    def borrowed(self, *, n_ctx: int, kv_cache: str) -> Iterator[LoadedModel]:
        """The model with another context size or KV cache type, freed when the block ends.

        A new context on the same weights where the backend can share them, else a second load
        (counted). Freed at once: a 4K context's KV cache and logits buffers (hundreds of MiB)
        should not outlive the check that needed them.
        """
        if (n_ctx, kv_cache) == (self.options.n_ctx, self.options.kv_cache):
            yield self.model  # the run's own context: lent, not freed
            return
        try:
            model = self.model.reconfigure(n_ctx=n_ctx, kv_cache=kv_cache)
            self._instruments.counters["contexts"] += 1
        except NotImplementedError:
            options = replace(self.options, n_ctx=n_ctx, kv_cache=kv_cache)  # type: ignore[arg-type]
            self._instruments.progress.log(
                f"loading {self.info.label} again for n_ctx={n_ctx}, kv_cache={kv_cache}"
            )
            model = self.backend.load(self.path, options)
            self._instruments.counters["model_loads"] += 1
        try:
            yield model
        finally:
            model.close()

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None
