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


def folder_files(folder: Path) -> list[str]:
    """The files under ``folder`` as sorted relative POSIX paths (what a manifest covers)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def manifest_digest(manifest: dict[str, str]) -> str:
    """The digest of a folder: the sha256 of its manifest (relative path -> file sha256) as
    sorted JSON. Equal manifests give equal digests wherever the folder lies."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


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
            return manifest_digest(self.manifest(path, progress=progress))
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

    def manifest(
        self, folder: Path, *, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, str]:
        """Every file under ``folder`` (relative POSIX path, sorted) -> its sha256.

        This is what a folder model's digest is computed from (:func:`manifest_digest`), so it
        can be recorded next to the digest and each file checked on its own later.
        """
        folder = folder.resolve()
        return {rel: self.digest(folder / rel, progress=progress) for rel in folder_files(folder)}

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
