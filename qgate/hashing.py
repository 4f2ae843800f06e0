"""Content digests of model files, streamed and read from their bytes in every run.

A digest names what a verdict was measured on (provenance, attestations, the reference cache's
keys), so it is never taken from a file: an index in the cache directory, keyed by path, size and
mtime, let a planted entry make an attestation name a file that was never measured. Within one
run each file is read once (:class:`DigestIndex` remembers it while its identity and stat are
unchanged); the next run reads it again. With the SHA instructions of current x86 and ARM CPUs
that costs about as much as reading the file once more, small next to scoring it (docs/ci.md
has the figure for Gemma 3 270M).
"""

from __future__ import annotations

import hashlib
import json
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
    """Digests of one run's files, each file read once in the run.

    Nothing is persisted or read back from disk. ``directory`` is accepted for callers that
    still pass the cache directory, and ignored: a file there is writable by whoever writes the
    cache, and a digest decides what a verdict names.
    """

    def __init__(self, directory: Path | None = None):
        del directory  # see the docstring: never a source of digests
        self._memo: dict[tuple[object, ...], str] = {}

    def digest(self, path: Path, *, progress: Callable[[int, int], None] | None = None) -> str:
        """The sha256 of ``path`` (a file, or a folder hashed as a sorted manifest of its files)."""
        path = path.resolve()
        if path.is_dir():
            return manifest_digest(self.manifest(path, progress=progress))
        key = _identity(path)
        value = self._memo.get(key)
        if value is None:
            value = sha256_file(path, progress=progress)
            # a file replaced or rewritten while it was read gets no memo: the next ask re-reads
            if _identity(path) == key:
                self._memo[key] = value
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


def _identity(path: Path) -> tuple[object, ...]:
    """What tells one version of a file from another within a run: a rewrite changes the mtime
    or ctime, a replacement the inode."""
    stat = path.stat()
    return (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
