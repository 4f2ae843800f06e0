"""Which installed backend opens a model: the one surest of it.

Every backend's ``detect`` says how sure it is that a path is in its format, from 0 to 1
(:meth:`qgate.backend.Backend.detect`). A format marker is certain (GGUF's magic bytes, a
``quant_method`` in ``config.json``); "a folder with a config.json and safetensors" is only
plausible, because every Hugging Face-style format is one. The highest claim wins. Two
backends with the same highest claim cannot be told apart by qgate: that is an error naming
both, never a silent pick by installation order. Every command that opens a model without
``--backend`` goes through :func:`resolve_backend`.
"""

from __future__ import annotations

import math
from pathlib import Path

from qgate.backend import Backend
from qgate.errors import UsageError
from qgate.plugins import Registry


def confidence(backend: Backend, path: Path) -> float:
    """How sure ``backend`` is that ``path`` is in its format, from 0 to 1.

    A backend whose ``detect`` raises on a hostile file does not claim it (0), nor does one that
    answers NaN or something that is not a number; ``True``/``False`` count as 1/0 and values
    outside 0..1 are clipped.
    """
    try:
        value = float(backend.detect(path))
    except Exception:
        return 0.0
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def detect_backend(registry: Registry, path: Path) -> Backend:
    """The installed backend with the highest claim on ``path``.

    :raises UsageError: when no backend claims it, or when two or more share the highest claim
        (naming them: ``--backend`` settles it).
    """
    claims = [(confidence(p.item, path), p.item) for p in registry.backends.values()]
    best = max((claim for claim, _ in claims), default=0.0)
    if best <= 0.0:
        names = ", ".join(sorted(registry.backends)) or "none"
        raise UsageError(
            f"{path}: no installed backend recognises this file (installed backends: {names}); "
            "is it a model? Name one with --backend, or install the extra for its format"
        )
    top = [backend for claim, backend in claims if claim == best]
    if len(top) > 1:
        tied = sorted(backend.name for backend in top)
        names = ", ".join(repr(name) for name in tied[:-1]) + f" and {tied[-1]!r}"
        raise UsageError(
            f"{path}: the backends {names} claim this file with the same confidence "
            f"({best:g}), so qgate cannot choose; pass --backend with the one to use"
        )
    return top[0]


def resolve_backend(registry: Registry, path: Path, name: str | None = None) -> Backend:
    """The backend named ``name`` (``--backend``), or else the one detected for ``path``.

    :raises UsageError: for a path that does not exist, an unknown name, or no single backend
        surest of the path (:func:`detect_backend`).
    """
    if not path.exists():
        raise UsageError(f"model not found: {path}")
    if name is not None:
        backend: Backend = registry.backend(name)
        return backend
    return detect_backend(registry, path)
