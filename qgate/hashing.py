"""Content digests of model files, streamed and remembered by (path, size, mtime).

A 70B model is hashed once per machine: the digest is stored in a small JSON index in the cache
directory and reused while the file's size and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

_CHUNK = 8 << 20


def sha256_file(path: Path, *, progress: Callable[[int, int], None] | None = None) -> str:
    """The sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


class DigestIndex:
    """Remembers file digests keyed by absolute path, size and mtime."""

    def __init__(self, directory: Path | None):
        self.file = directory / "digests.json" if directory else None
        self._entries: dict[str, dict[str, object]] = {}
        if self.file and self.file.is_file():
            try:
                self._entries = json.loads(self.file.read_text())
            except (OSError, ValueError):
                self._entries = {}  # a damaged index is only a cache: start again

    def digest(self, path: Path, *, progress: Callable[[int, int], None] | None = None) -> str:
        """The sha256 of ``path`` (a file, or a folder hashed as a sorted manifest of its files)."""
        path = path.resolve()
        if path.is_dir():
            manifest = {
                str(p.relative_to(path)): self.digest(p, progress=progress)
                for p in sorted(path.rglob("*"))
                if p.is_file()
            }
            return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        stat = path.stat()
        key = str(path)
        entry = self._entries.get(key)
        if (
            entry
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
        ):
            return str(entry["sha256"])
        value = sha256_file(path, progress=progress)
        self._entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        self._save()
        return value

    def _save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._entries, indent=0, sort_keys=True))
            tmp.replace(self.file)
        except OSError:
            pass  # an unwritable cache directory costs speed, never correctness
