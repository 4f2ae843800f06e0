"""The reference cache: the reference's expensive outputs, stored by content hash.

Entries are ``.npz`` files of plain arrays, read with ``allow_pickle=False``: a cache directory
restored from CI storage is as untrusted as any other input. The key covers everything the
content depends on (model digest, text digest, scoring settings, format version), so a stale
entry is never read; a damaged one is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get("QGATE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qgate"


def cache_key(kind: str, **parts: Any) -> str:
    payload = json.dumps(
        {"kind": kind, "format": CACHE_FORMAT, **parts}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ReferenceCache:
    """A directory of cached arrays; ``None`` directory means caching is off."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, EOFError):
            return None  # damaged: recompute rather than trust it

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
            tmp.replace(path)
        except OSError:
            pass  # a full or read-only disk costs time, not correctness

    def load_json(self, key: str) -> Any:
        """A cached JSON document (generations), or None when absent or damaged."""
        path = self._path(key, ".json")
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def store_json(self, key: str, document: Any) -> None:
        path = self._path(key, ".json")
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass

    def size_of(self, key: str) -> int:
        path = self._path(key)
        return path.stat().st_size if path and path.is_file() else 0

    def _path(self, key: str, suffix: str = ".npz") -> Path | None:
        return self.directory / "reference" / key[:2] / f"{key}{suffix}" if self.directory else None
