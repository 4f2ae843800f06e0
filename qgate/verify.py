"""``qgate verify``: are these still the files a results file judged?

Every model file the results name (each subject and the reference; each file of a folder model)
is hashed again, from its bytes, and compared with the sha256 recorded when it was measured. The
digest cache is never consulted: a file rewritten in place with its old size and modification
time must still be caught.

Files are looked for at their recorded path (as given on the command line, then as resolved at
the time), or, with ``--models DIR``, by file name under ``DIR`` (directly in it, else anywhere
below it), so results can be checked after the models were moved or downloaded elsewhere.

Each file is reported ``ok``, ``MISMATCH``, ``missing``, or ``extra`` (a file in a folder model
that the recorded manifest does not list). Exit 0 when all are ok, 1 otherwise, 2 when the
results file cannot be read or records no digests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgate.errors import ExitCode, UsageError
from qgate.hashing import folder_files, sha256_file
from qgate.progress import Progress

OK = "ok"
MISMATCH = "MISMATCH"
MISSING = "missing"
EXTRA = "extra"
#: files above this size show hashing progress
PROGRESS_BYTES = 256 << 20


@dataclass
class FileCheck:
    """One file's verification."""

    role: str  #: ``subject`` or ``reference``
    name: str  #: the file name (``folder/relative/path`` for a folder model's file)
    status: str  #: ok, MISMATCH, missing or extra
    path: str = ""  #: where it was found (or looked for)
    expected: str = ""
    actual: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        where = f" ({self.role}, {self.path})" if self.path else f" ({self.role})"
        if self.status == OK:
            return f"{OK:<9} {self.name}  sha256 {self.expected[:12]}{where}"
        if self.status == MISMATCH:
            return (
                f"{MISMATCH:<9} {self.name}  recorded sha256 {self.expected[:12]}, "
                f"file has {self.actual[:12]}{where}"
            )
        if self.status == EXTRA:
            return f"{EXTRA:<9} {self.name}  not in the recorded manifest{where}"
        return f"{MISSING:<9} {self.name}{where}"


def read_artifacts(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """The (role, record) of every model a results file names; UsageError when unreadable."""
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {results}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{results}: not a qgate results file: {exc}") from None
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


def locate(record: dict[str, Any], models_dir: Path | None) -> list[Path]:
    """Where a recorded model may be now: its recorded paths, or its name under ``models_dir``."""
    want_dir = record.get("kind") == "folder"

    def fits(path: Path) -> bool:
        return path.is_dir() if want_dir else path.is_file()

    name = str(record.get("name") or Path(record["path"]).name)
    if models_dir is not None:
        direct = models_dir / name
        if fits(direct):
            return [direct]
        return [p for p in sorted(models_dir.rglob(name)) if fits(p)]
    for raw in (record.get("path"), record.get("resolved")):
        if isinstance(raw, str) and raw and fits(Path(raw)):
            return [Path(raw)]
    return []


def _hasher(progress: Progress, label: str) -> Callable[[Path], str]:
    def hash_file(path: Path) -> str:
        def report(done: int, total: int) -> None:
            if total > PROGRESS_BYTES:
                progress.update(f"verifying {label}", done >> 20, total >> 20, "MiB")

        return sha256_file(path, progress=report)

    return hash_file


def check_artifact(
    role: str, record: dict[str, Any], models_dir: Path | None, progress: Progress
) -> Iterator[FileCheck]:
    """The checks of one recorded model: one for a file, one per file of a folder."""
    name = str(record.get("name") or Path(record["path"]).name)
    where = str(models_dir / name) if models_dir is not None else str(record["path"])
    candidates = locate(record, models_dir)
    if record.get("kind") == "folder":
        files = [f for f in record["files"] if isinstance(f, dict)]
        if not candidates:
            for entry in files:
                yield FileCheck(role, f"{name}/{entry.get('path')}", MISSING, where)
            return
        yield from _check_folder(role, name, files, candidates, progress)
        return
    if not candidates:
        yield FileCheck(role, name, MISSING, where, record["sha256"])
        return
    hash_file = _hasher(progress, name)
    first: FileCheck | None = None
    for candidate in candidates:
        try:
            actual = hash_file(candidate)
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
) -> Iterator[FileCheck]:
    """A folder model: the first candidate folder whose files all match, else the first one."""
    best: list[FileCheck] | None = None
    for folder in candidates:
        checks = []
        for entry in files:
            rel = str(entry.get("path"))
            path = folder / rel
            expected = str(entry.get("sha256"))
            try:
                actual = _hasher(progress, f"{name}/{rel}")(path)
            except OSError:  # absent, or unreadable
                checks.append(FileCheck(role, f"{name}/{rel}", MISSING, str(path), expected))
                continue
            status = OK if actual == expected else MISMATCH
            checks.append(FileCheck(role, f"{name}/{rel}", status, str(path), expected, actual))
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
    counts = {s: sum(c.status == s for c in checks) for s in (OK, MISMATCH, MISSING, EXTRA)}
    parts = [f"{counts[OK]} ok"]
    parts += [f"{n} {s}" for s, n in counts.items() if s != OK and n]
    verdict = "all files match" if all(c.ok for c in checks) else "FAILED"
    return f"qgate verify: {verdict}: " + ", ".join(parts)


def exit_code(checks: list[FileCheck]) -> ExitCode:
    return ExitCode.OK if checks and all(c.ok for c in checks) else ExitCode.GATE_FAILED
