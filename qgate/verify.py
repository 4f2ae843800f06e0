"""``qgate verify``: are these still the files a results file judged?

Every model file the results name (each subject and the reference; each file of a folder model)
is hashed again, from its bytes, and compared with the sha256 recorded when it was measured. The
digest cache is never consulted: a file rewritten in place with its old size and modification
time must still be caught.

Files are looked for at their recorded path (as given on the command line, then as resolved at
the time), or, with ``--models DIR``, by file name under ``DIR`` (directly in it, else anywhere
below it), so results can be checked after the models were moved or downloaded elsewhere.

Each file is reported ``ok``, ``MISMATCH``, ``missing``, ``extra`` (a file in a folder model
that the recorded manifest does not list) or ``refused``. Exit 0 when all are ok, 1 otherwise, 2
when the results file cannot be read or records no digests.

A results file is untrusted input (it may come with the pull request under review), and so are
the names in it. Only regular files are read: never a FIFO, a device or a socket (reading one
would hang, or never end). A recorded name is a plain file name, and a folder's file is a
relative path that stays inside the folder (no ``..``, no absolute path). Under ``--models DIR``
nothing outside ``DIR`` is read, symlinks included. What a results file cannot name, it gets
``refused`` for, with the reason.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from qgate.errors import ExitCode, UsageError
from qgate.hashing import folder_files
from qgate.integrity import results_json
from qgate.progress import Progress
from qgate.text import printable

OK = "ok"
MISMATCH = "MISMATCH"
MISSING = "missing"
EXTRA = "extra"
REFUSED = "refused"
_CHUNK = 8 << 20
#: files above this size show hashing progress
PROGRESS_BYTES = 256 << 20


@dataclass
class FileCheck:
    """One file's verification."""

    role: str  #: ``subject`` or ``reference``
    name: str  #: the file name (``folder/relative/path`` for a folder model's file)
    status: str  #: ok, MISMATCH, missing, extra or refused
    path: str = ""  #: where it was found (or looked for)
    expected: str = ""
    actual: str = ""
    reason: str = ""  #: why it was refused

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        """One line for the terminal; names and digests come from the results file, so they
        are printed without control characters or escape sequences."""
        name, expected, actual = (printable(x) for x in (self.name, self.expected, self.actual))
        where = printable(f" ({self.role}, {self.path})" if self.path else f" ({self.role})")
        if self.status == OK:
            return f"{OK:<9} {name}  sha256 {expected[:12]}{where}"
        if self.status == MISMATCH:
            return (
                f"{MISMATCH:<9} {name}  recorded sha256 {expected[:12]}, "
                f"file has {actual[:12]}{where}"
            )
        if self.status == EXTRA:
            return f"{EXTRA:<9} {name}  not in the recorded manifest{where}"
        if self.status == REFUSED:
            return f"{REFUSED:<9} {name}  {printable(self.reason)}{where}"
        return f"{MISSING:<9} {name}{where}"


class Refused(Exception):
    """A recorded name or the file it leads to may not be read; the message says why."""


def read_artifacts(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """The (role, record) of every model a results file names; UsageError when unreadable."""
    data = results_json(results)
    if not isinstance(data, dict) or "subjects" not in data:
        raise UsageError(f"{results}: not a qgate results file (no 'subjects')")
    provenance = data.get("provenance")
    if not isinstance(provenance, dict) or not provenance:
        raise UsageError(
            f"{results}: records no file digests (written by a qgate without provenance)"
        )
    artifacts: list[tuple[str, dict[str, Any]]] = [
        ("subject", record) for record in provenance.get("subjects") or []
    ]
    if provenance.get("reference"):
        artifacts.append(("reference", provenance["reference"]))
    for role, record in artifacts:
        if not (
            isinstance(record, dict)
            and isinstance(record.get("path"), str)
            and isinstance(record.get("sha256"), str)
            and (record.get("kind") != "folder" or isinstance(record.get("files"), list))
        ):
            path = record.get("path") if isinstance(record, dict) else record
            raise UsageError(f"{results}: the {role} {path} has no recorded sha256")
    if not artifacts:
        raise UsageError(f"{results}: records no file digests")
    return artifacts


def recorded_name(record: dict[str, Any]) -> str:
    """The model's recorded file name; :class:`Refused` unless it is one plain path component
    (a results file must not steer ``--models DIR / name`` to ``../..`` or ``/etc``)."""
    name = str(record.get("name") or PurePosixPath(str(record["path"])).name)
    if name in ("", ".", "..") or any(c in name for c in "/\\\x00"):
        raise Refused(f"the recorded name {name!r} is not a plain file name")
    return name


def relative_name(rel: Any) -> PurePosixPath:
    """A folder model's recorded file: a relative path that stays inside the folder."""
    path = PurePosixPath(str(rel))
    if not str(rel) or "\x00" in str(rel) or path.is_absolute() or ".." in path.parts:
        raise Refused(f"the recorded path {str(rel)!r} is not a relative path inside the folder")
    return path


def locate(record: dict[str, Any], models_dir: Path | None) -> list[Path]:
    """Where a recorded model may be now: its recorded paths, or its name under ``models_dir``.

    What is found there is not checked yet (it may be a FIFO, or a symlink out of
    ``models_dir``): :func:`read_digest` refuses those with a reason, rather than the file
    being reported missing.
    """
    want_dir = record.get("kind") == "folder"

    def fits(path: Path) -> bool:
        return path.is_dir() if want_dir else os.path.lexists(path) and not path.is_dir()

    if models_dir is not None:
        name = recorded_name(record)
        direct = models_dir / name
        if direct.is_dir() if want_dir else direct.is_file():
            return [direct]
        # the name is matched literally: "*" in a recorded name is not a wildcard
        return [p for p in sorted(models_dir.rglob(glob.escape(name))) if fits(p)]
    for raw in (record.get("path"), record.get("resolved")):
        if isinstance(raw, str) and raw and "\x00" not in raw and fits(Path(raw)):
            return [Path(raw)]
    return []


def read_digest(
    path: Path, root: Path | None, progress: Callable[[int, int], None] | None = None
) -> str:
    """The sha256 of the regular file at ``path``, inside ``root`` (resolved) when given.

    :class:`Refused` for anything else: a FIFO would block the open (and a device never end),
    and a symlink may lead out of ``--models``. The type is checked before the open, so a
    device is never opened, and again on the open descriptor, so a file swapped in between
    is caught too. ``OSError`` when the file cannot be read.
    """
    real = path.resolve()
    if root is not None and not real.is_relative_to(root):
        raise Refused(f"leads outside --models {root} (to {real})")
    mode = os.stat(real).st_mode
    if not stat.S_ISREG(mode):
        raise Refused(f"not a regular file ({_file_kind(mode)})")
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"not a regular file ({_file_kind(info.st_mode)})")
        digest = hashlib.sha256()
        done = 0
        while block := handle.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, info.st_size)
    return digest.hexdigest()


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    )
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _hasher(progress: Progress, label: str, root: Path | None) -> Callable[[Path], str]:
    def hash_file(path: Path) -> str:
        def report(done: int, total: int) -> None:
            if total > PROGRESS_BYTES:
                progress.update(f"verifying {label}", done >> 20, total >> 20, "MiB")

        return read_digest(path, root, progress=report)

    return hash_file


def check_artifact(
    role: str, record: dict[str, Any], models_dir: Path | None, progress: Progress
) -> Iterator[FileCheck]:
    """The checks of one recorded model: one for a file, one per file of a folder."""
    try:
        name = recorded_name(record)
        candidates = locate(record, models_dir)
    except Refused as exc:
        shown = str(record.get("name") or record["path"])
        yield FileCheck(role, shown, REFUSED, "", str(record["sha256"]), reason=str(exc))
        return
    where = str(models_dir / name) if models_dir is not None else str(record["path"])
    root = models_dir.resolve() if models_dir is not None else None
    if record.get("kind") == "folder":
        files = [f for f in record["files"] if isinstance(f, dict)]
        if not candidates:
            for entry in files:
                yield FileCheck(role, f"{name}/{entry.get('path')}", MISSING, where)
            return
        yield from _check_folder(role, name, files, candidates, progress, root)
        return
    if not candidates:
        yield FileCheck(role, name, MISSING, where, record["sha256"])
        return
    hash_file = _hasher(progress, name, root)
    first: FileCheck | None = None
    for candidate in candidates:
        try:
            actual = hash_file(candidate)
        except Refused as exc:
            refused = FileCheck(role, name, REFUSED, str(candidate), record["sha256"])
            refused.reason = str(exc)
            first = first or refused
            continue
        except OSError:
            continue
        status = OK if actual == record["sha256"] else MISMATCH
        found = FileCheck(role, name, status, str(candidate), record["sha256"], actual)
        if found.ok:
            yield found
            return
        first = first or found
    yield first or FileCheck(role, name, MISSING, where, record["sha256"])


def _check_folder(
    role: str,
    name: str,
    files: list[dict[str, Any]],
    candidates: list[Path],
    progress: Progress,
    root: Path | None = None,
) -> Iterator[FileCheck]:
    """A folder model: the first candidate folder whose files all match, else the first one."""
    best: list[FileCheck] | None = None
    for folder in candidates:
        checks = [_check_folder_file(role, name, folder, entry, progress, root) for entry in files]
        recorded = {str(entry.get("path")) for entry in files}
        checks += [
            FileCheck(role, f"{name}/{rel}", EXTRA, str(folder / rel))
            for rel in folder_files(folder)
            if rel not in recorded
        ]
        if all(c.ok for c in checks):
            yield from checks
            return
        best = best or checks
    yield from best or []


def _check_folder_file(
    role: str,
    name: str,
    folder: Path,
    entry: dict[str, Any],
    progress: Progress,
    root: Path | None,
) -> FileCheck:
    """One recorded file of a folder model, its name checked before anything is opened."""
    rel = str(entry.get("path"))
    expected = str(entry.get("sha256"))
    shown = f"{name}/{rel}"
    try:
        path = folder / relative_name(rel)
        actual = _hasher(progress, shown, root)(path)
    except Refused as exc:
        return FileCheck(role, shown, REFUSED, str(folder), expected, reason=str(exc))
    except OSError:  # absent, or unreadable
        return FileCheck(role, shown, MISSING, str(folder / rel), expected)
    status = OK if actual == expected else MISMATCH
    return FileCheck(role, shown, status, str(path), expected, actual)


def verify(
    results: Path, *, models_dir: Path | None = None, progress: Progress | None = None
) -> list[FileCheck]:
    """Re-hash every model file ``results`` names; one :class:`FileCheck` per file."""
    progress = progress or Progress(enabled=False)
    if models_dir is not None and not models_dir.is_dir():
        raise UsageError(f"--models {models_dir}: not a directory")
    checks: list[FileCheck] = []
    for role, record in read_artifacts(results):
        checks.extend(check_artifact(role, record, models_dir, progress))
    return checks


def summary(checks: list[FileCheck]) -> str:
    statuses = (OK, MISMATCH, MISSING, EXTRA, REFUSED)
    counts = {s: sum(c.status == s for c in checks) for s in statuses}
    parts = [f"{counts[OK]} ok"]
    parts += [f"{n} {s}" for s, n in counts.items() if s != OK and n]
    verdict = "all files match" if all(c.ok for c in checks) else "FAILED"
    return f"qgate verify: {verdict}: " + ", ".join(parts)


def exit_code(checks: list[FileCheck]) -> ExitCode:
    return ExitCode.OK if checks and all(c.ok for c in checks) else ExitCode.GATE_FAILED
