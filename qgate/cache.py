"""The reference cache: the reference's expensive outputs, stored self-describing and checked.

A cache directory is untrusted input. CI restores it from storage a pull request may have
written, forks share it, a full disk truncates it, two jobs write it at once. So:

- An entry is named by the sha256 of its *material*: its kind, the cache format and every input
  that changes its content (the reference's digest, the text's digest, the scoring settings, the
  backend and its options, the versions of the libraries that compute the numbers). The entry
  stores that material and the sha256 of its content next to the content.
- A read checks, in order: that git does not track the file (a file committed to the repository
  under test is the pull request's, not a cache's); that it parses (``allow_pickle=False``);
  that its material is what this run asks for; that its content matches its digest; and that
  its arrays have the shapes, dtypes and values the caller expects. Any failure discards the
  entry: the caller recomputes it and stores it again, and the rejection is counted
  (``reference_cache_rejected``), logged, and recorded in the run's provenance.
- A write goes to a unique temporary file in the entry's directory and is renamed over the entry
  (``os.replace``): a reader sees the old entry or the new one, never a mix, however many
  writers race (two containers can share a PID, so the name never derives from it).

The content digest detects damage and an entry copied over another's name; it is not a
signature, since whoever can write the directory can recompute it. Re-scoring cached chunks with
the real reference (``evaluation.cache_spot_check``, see docs/ci.md) is the defence against a
forged entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import numpy as np

from qgate.backend import BackendOptions
from qgate.instruments import Instruments

#: the layout of entries; a new format gets new names, so old entries are simply never read
CACHE_FORMAT = 2
#: distributions whose versions change the cached numbers (llama.cpp's kernels, torch's exp,
#: which qgate's log-softmax uses when torch is installed, numpy's sampling)
SCORING_LIBRARIES: tuple[str, ...] = (
    "llama-cpp-python",
    "transformers",
    "torch",
    "exllamav2",
    "gptqmodel",
    "numpy",
)
#: the array member of an ``.npz`` entry that holds its material and content digest
META = "__qgate_entry__"
#: seconds ``git ls-files`` may take before the cache is treated as unknown ground
GIT_TIMEOUT = 10.0
#: the largest JSON entry read: generations of a few hundred prompts take well under a MiB, and
#: a planted multi-gigabyte file must not be read into memory
MAX_DOCUMENT_BYTES = 64 << 20

#: a caller's check of an entry's content: the reason it is unusable, or None
Validator = Callable[[Any], str | None]


def default_cache_dir() -> Path:
    env = os.environ.get("QGATE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qgate"


def canonical(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists, keys strings): what is stored
    and what is compared."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of :data:`SCORING_LIBRARIES` from package metadata: nothing is imported."""
    versions = {}
    for name in SCORING_LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def backend_material(backend: str, options: BackendOptions) -> dict[str, Any]:
    """What of a backend's settings changes the numbers it computes.

    ``threads`` is left out on purpose: it changes at most the order of a few float additions
    (far inside the spot-check's tolerance), and keying on it would make every runner with
    another core count miss a baseline computed elsewhere. GPU layers stay in: a layer on the
    GPU runs other kernels than on the CPU.
    """
    return {
        "backend": backend,
        "n_ctx": options.n_ctx,
        "kv_cache": options.kv_cache,
        "gpu_layers": options.gpu_layers,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "extra": options.extra,
        "libraries": library_versions(),
    }


@dataclass(frozen=True)
class Entry:
    """One cache entry's identity: its kind and everything its content depends on."""

    kind: str
    material: dict[str, Any]

    @classmethod
    def of(cls, kind: str, **parts: Any) -> Entry:
        return cls(kind, canonical({"kind": kind, "format": CACHE_FORMAT, **parts}))

    @functools.cached_property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.material, sort_keys=True).encode()).hexdigest()

    def differences(self, stored: Any) -> list[str]:
        """The material fields in which ``stored`` differs from this entry's."""
        if not isinstance(stored, dict):
            return ["all (no material)"]
        names = sorted(set(stored) | set(self.material))
        return [n for n in names if stored.get(n) != self.material.get(n)]


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """The sha256 of named arrays: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def document_digest(document: Any) -> str:
    """The sha256 of a JSON document in canonical form."""
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class Rejected(Exception):
    """An entry that cannot be used, with the reason (never leaves this module)."""


class ReferenceCache:
    """A directory of cache entries; a ``None`` directory means caching is off.

    :meth:`start_run` binds the run's counters and progress, where reads report what they
    discard; :meth:`run_record` is what the run's provenance records about the cache.
    """

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.start_run(Instruments())

    def start_run(self, instruments: Instruments) -> None:
        """Report into the run's ``instruments`` from now on, with a fresh record."""
        self.instruments = instruments
        self.rejected: list[dict[str, Any]] = []
        self.spot_checks: list[dict[str, Any]] = []
        self._tracked: frozenset[Path] | None = None
        self._git_checked = False
        self._git_problem = ""

    # -- arrays -------------------------------------------------------------------------------
    def load(
        self, entry: Entry, *, validate: Validator | None = None
    ) -> dict[str, np.ndarray] | None:
        """The entry's arrays when it is present and passes every check, else None."""
        path = self._readable(entry, ".npz")
        if path is None:
            return None
        try:
            arrays = _read_npz(path)
            meta = arrays.pop(META, None)
            if meta is None or meta.dtype != np.uint8 or meta.ndim != 1:
                raise Rejected("it records no material (written by another qgate?)")
            self._check_meta(entry, _json_of(meta.tobytes()), arrays_digest(arrays))
            _check_content(arrays, validate)
        except Rejected as exc:
            self.reject(entry, str(exc))
            return None
        return arrays

    def store(self, entry: Entry, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the entry (material, content digest, arrays) atomically; errors cost only time."""
        meta = json.dumps({"material": entry.material, "sha256": arrays_digest(arrays)})
        members = {**arrays, META: np.frombuffer(meta.encode(), dtype=np.uint8)}
        self._write(entry, ".npz", lambda handle: np.savez(handle, **members))  # type: ignore[arg-type]  # numpy's stub misreads **kwargs

    # -- JSON documents (generations) ---------------------------------------------------------
    def load_json(self, entry: Entry, *, validate: Validator | None = None) -> Any:
        """The entry's document when it is present and passes every check, else None."""
        path = self._readable(entry, ".json")
        if path is None:
            return None
        try:
            try:
                if path.stat().st_size > MAX_DOCUMENT_BYTES:
                    raise Rejected(f"it is larger than {MAX_DOCUMENT_BYTES >> 20} MiB")
                envelope = _json_of(path.read_bytes())
            except OSError as exc:
                raise Rejected(f"unreadable: {exc.strerror or exc}") from None
            if not isinstance(envelope, dict) or "content" not in envelope:
                raise Rejected("it records no material (written by another qgate?)")
            content = envelope["content"]
            self._check_meta(entry, envelope, document_digest(content))
            _check_content(content, validate)
        except Rejected as exc:
            self.reject(entry, str(exc))
            return None
        return content

    def store_json(self, entry: Entry, document: Any) -> None:
        envelope = {
            "material": entry.material,
            "sha256": document_digest(document),
            "content": document,
        }
        text = json.dumps(envelope, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
        self._write(entry, ".json", lambda handle: handle.write(text))

    # -- reporting ----------------------------------------------------------------------------
    def reject(self, entry: Entry, reason: str) -> None:
        """Count, log and record an entry that was not used (the caller recomputes it)."""
        self.instruments.counters["reference_cache_rejected"] += 1
        self.instruments.progress.log(
            f"reference cache: discarded the {entry.kind} entry {entry.key[:16]}: {reason}; "
            "recomputing it"
        )
        self.rejected.append({"kind": entry.kind, "entry": entry.key, "reason": reason})

    def record_spot_check(self, entry: Entry, record: Mapping[str, Any]) -> None:
        """Record a spot-check of ``entry`` (what was re-scored and how far it agreed)."""
        self.instruments.counters["reference_cache_spot_checks"] += 1
        self.spot_checks.append({"kind": entry.kind, "entry": entry.key, **record})

    def run_record(self) -> dict[str, Any]:
        """What this run read from the cache that it did not trust, and what it re-scored."""
        record: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "directory": str(self.directory) if self.directory else None,
            "rejected": list(self.rejected),
            "spot_checks": list(self.spot_checks),
        }
        if self._git_problem:
            record["untrusted_directory"] = self._git_problem
        return record

    def size_of(self, entry: Entry) -> int:
        path = self._path(entry, ".npz")
        return path.stat().st_size if path and path.is_file() else 0

    # -- internals ----------------------------------------------------------------------------
    def _path(self, entry: Entry, suffix: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / "reference" / entry.key[:2] / f"{entry.key}{suffix}"

    def _readable(self, entry: Entry, suffix: str) -> Path | None:
        """The entry's path when there is a file there that git does not track."""
        path = self._path(entry, suffix)
        if path is None or not path.is_file():
            return None
        why = self._untrusted(path)
        if why:
            self.reject(entry, why)
            return None
        return path

    def _check_meta(self, entry: Entry, meta: Any, content_digest: str) -> None:
        if not isinstance(meta, dict):
            raise Rejected("it records no material (written by another qgate?)")
        differ = entry.differences(meta.get("material"))
        if differ:
            raise Rejected(
                f"it was computed for other inputs than this run's (differs in: "
                f"{', '.join(differ)})"
            )
        if meta.get("sha256") != content_digest:
            raise Rejected("its content does not match its recorded sha256")

    def _untrusted(self, path: Path) -> str:
        """Why an entry at ``path`` must not be read ("" when it may)."""
        tracked = self._tracked_files()
        if tracked is None:
            return self._git_problem
        if path.absolute() in tracked or path.resolve() in tracked:
            return "git tracks this file in the repository around the cache directory"
        return ""

    def _tracked_files(self) -> frozenset[Path] | None:
        """Files under the cache directory that git tracks, listed once per run; None when the
        directory lies in a git work tree and git cannot say (then nothing there is read)."""
        if not self._git_checked:
            self._git_checked = True
            assert self.directory is not None
            self._tracked, self._git_problem = tracked_files(self.directory)
            if self._git_problem:
                self.instruments.progress.log(f"reference cache: {self._git_problem}")
        return self._tracked

    def _write(self, entry: Entry, suffix: str, write: Callable[[IO[bytes]], Any]) -> None:
        path = self._path(entry, suffix)
        if path is None or (path.is_file() and self._untrusted(path)):
            return  # never overwrite a file of the repository under test
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, write)
        except OSError:
            pass  # a full or read-only disk costs time, not correctness


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a uniquely named temporary file in its directory, then rename it
    over ``path``: concurrent writers never share a temporary, readers never see half a file.

    No fsync: after a crash an entry may be empty or short, which a read rejects and recomputes.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); an entry gets the mode any new file would, so
        # a cache shared between accounts stays readable as it was before
        if os.chmod in os.supports_fd:
            os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    """The process's umask (read once: reading it means setting it for a moment)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def tracked_files(directory: Path) -> tuple[frozenset[Path] | None, str]:
    """The files under ``directory`` that git tracks, and a problem ("" when there is none).

    Outside any git work tree git is not even asked. Inside one, ``git ls-files`` answers; when
    git is missing or fails there, the answer is None with the reason: the cache then reads
    nothing (it cannot tell the pull request's files from its own).
    """
    root = directory.resolve()
    if not root.is_dir() or not _inside_work_tree(root):
        return frozenset(), ""
    git = shutil.which("git")
    if git is None:
        return None, (
            f"{directory} lies in a git work tree and git is not installed to tell which files "
            "it tracks: no entry is read from it"
        )
    # safe.directory: a checkout owned by another user (containers) must not make git refuse;
    # fsmonitor off: listing files must never run a command configured in the repository
    command = [git, "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "ls-files", "-z"]
    try:
        done = subprocess.run(
            command, cwd=root, capture_output=True, timeout=GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{directory}: git ls-files failed ({exc}): no entry is read from it"
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        return None, (
            f"{directory}: git ls-files failed ({message[-1] if message else done.returncode}): "
            "no entry is read from it"
        )
    names = [n for n in done.stdout.decode(errors="surrogateescape").split("\0") if n]
    return frozenset(_both_forms(root, names)), ""


def _both_forms(root: Path, names: Iterable[str]) -> Iterable[Path]:
    """Each tracked file as written and resolved: a tracked symlink is ignored, and so is an
    entry that is a symlink to a tracked file."""
    for name in names:
        path = root / name
        yield path
        yield path.resolve()


def _inside_work_tree(directory: Path) -> bool:
    return any((parent / ".git").exists() for parent in (directory, *directory.parents))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        _check_stored(path)
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Rejected:
        raise
    except Exception as exc:  # a hostile zip or .npy header fails in many ways: all are damage
        raise Rejected(f"damaged ({type(exc).__name__}: {exc})") from None


def _check_stored(path: Path) -> None:
    """qgate writes members uncompressed: a compressed one could inflate without bound."""
    with zipfile.ZipFile(path) as archive:
        packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise Rejected(f"it holds compressed members ({', '.join(packed[:3])}), never written here")


def _json_of(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8", errors="surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"damaged ({type(exc).__name__}: {exc})") from None


def _check_content(content: Any, validate: Validator | None) -> None:
    problem = validate(content) if validate is not None else None
    if problem:
        raise Rejected(problem)


def spot_check_picks(seed: int, entry: Entry, population: int, count: int) -> list[int]:
    """``count`` distinct items of ``range(population)``, drawn from a run's spot-check seed and
    the entry (so two entries of one run get independent draws), in ascending order."""
    if population <= 0 or count <= 0:
        return []
    rng = np.random.default_rng([seed, int(entry.key[:15], 16)])
    return sorted(
        int(i) for i in rng.choice(population, size=min(count, population), replace=False)
    )


# -- validation helpers for callers ---------------------------------------------------------
