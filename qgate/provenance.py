"""Provenance: exactly what a run measured, recorded so its verdict can be checked later.

:func:`collect` builds the ``provenance`` block of a run's results:

``subjects`` / ``reference``
    each model's path, size and sha256; a model that is a folder also gets its manifest, one
    sha256 per file (the folder's digest is the digest of that manifest, see
    :func:`qgate.hashing.manifest_digest`). ``qgate verify`` re-hashes from these records.
``policy``
    the policy's name, the sha256 of its canonical resolved form (:func:`policy_sha256`), the
    files it was read from with their digests, and the backend options in effect (command-line
    overrides included).
``datasets`` / ``prompt_sets``
    the sha256 of each evaluation text (the same digest the reference cache keys use), plus the
    file's own digest for a user's file; the prompt sets named by check options.
``qgate_version``, ``plugins``, ``libraries``, ``machine``
    qgate's version, every plugin's distribution and version, the backend libraries' versions
    (read from package metadata, never imported) and the machine's facts.

``reference_cache``
    what the run did not trust in the reference cache: every entry it discarded and why, every
    spot-check with the chunks it re-scored (see :mod:`qgate.cache`).

Model files are hashed from their bytes in this run, through the run's
:class:`~qgate.hashing.DigestIndex`, which reads each file once per run (a reference already
hashed for its cache key is not read again) and never takes a digest from disk: a digest
recorded here names what the verdict was measured on. A big file shows progress while hashed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from qgate import __version__
from qgate.backend import BackendOptions
from qgate.cache import ReferenceCache
from qgate.datasets import Dataset
from qgate.errors import QgateError
from qgate.handle import ModelHandle
from qgate.hashing import DigestIndex, manifest_digest, sha256_file
from qgate.plugins import Registry
from qgate.policy.model import Policy
from qgate.policy.resolved import resolved_policy_data
from qgate.progress import Progress

#: version of the layout of the ``provenance`` block
PROVENANCE_FORMAT = 1
#: distributions whose versions can change a backend's numbers
BACKEND_LIBRARIES: tuple[str, ...] = (
    "llama-cpp-python",
    "gguf",
    "exllamav2",
    "transformers",
    "gptqmodel",
    "torch",
    "numpy",
)
NOT_INSTALLED = "not installed"
#: files above this size show hashing progress
PROGRESS_BYTES = 256 << 20
#: check option names that name a prompt set (see :mod:`qgate.prompts`)
PROMPT_SET_OPTIONS: tuple[str, ...] = ("prompts",)
#: seconds ``nvidia-smi`` may take before the GPU names are left out
GPU_QUERY_TIMEOUT = 5.0


def canonical_json(data: Any) -> bytes:
    """``data`` as canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def policy_sha256(policy: Policy) -> str:
    """The sha256 of the resolved policy's canonical JSON.

    The ``files`` it was read from are left out: where a policy file lies does not change what
    it asks for, so the same policy has the same digest on every machine.
    """
    data = {k: v for k, v in resolved_policy_data(policy).items() if k != "files"}
    return hashlib.sha256(canonical_json(data)).hexdigest()


def hash_progress(progress: Progress, label: str) -> Callable[[int, int], None]:
    """A hashing progress callback that reports only for big files."""

    def report(done: int, total: int) -> None:
        if total > PROGRESS_BYTES:
            progress.update(f"hashing {label}", done >> 20, total >> 20, "MiB")

    return report


def artifact_record(
    path: Path,
    digests: DigestIndex,
    *,
    progress: Progress,
    handle: ModelHandle | None = None,
    hash_files: bool = True,
) -> dict[str, Any]:
    """A model's record: path, kind, size and sha256 (and a folder's per-file manifest).

    With ``handle``, the digest is the handle's (computed once per run, and already known when
    the reference cache needed it). ``hash_files=False`` records the path only: an interrupted
    run does not start reading gigabytes.
    """
    record: dict[str, Any] = {
        "path": str(path),
        "resolved": str(path.resolve()),
        "name": path.name,
        "kind": "folder" if path.is_dir() else "file",
    }
    if not hash_files:
        return {**record, "sha256": None, "note": "not hashed: the run was interrupted"}
    callback = hash_progress(progress, path.name)
    try:
        if path.is_dir():
            manifest = digests.manifest(path, progress=callback)
            digest = handle.digest if handle is not None else manifest_digest(manifest)
            sizes = {rel: (path / rel).stat().st_size for rel in manifest}
            files = [
                {"path": rel, "sha256": sha, "size": sizes[rel]} for rel, sha in manifest.items()
            ]
            record.update(sha256=digest, size=sum(sizes.values()), files=files)
        else:
            digest = (
                handle.digest if handle is not None else digests.digest(path, progress=callback)
            )
            record.update(sha256=digest, size=path.stat().st_size)
    except OSError as exc:
        return {**record, "sha256": None, "error": f"cannot hash: {exc.strerror or exc}"}
    return record


def dataset_records(datasets: Iterable[Dataset]) -> list[dict[str, Any]]:
    """Each dataset's domain, source and text sha256; a user's file also gets its file sha256."""
    records = []
    for dataset in datasets:
        record: dict[str, Any] = {
            "domain": dataset.domain,
            "source": dataset.source,
            "sha256": dataset.digest,
            "chunks": dataset.chunks,
        }
        if not dataset.source.startswith("builtin:"):
            record["file_sha256"] = _file_sha256(Path(dataset.source))
        records.append(record)
    return records


def prompt_set_records(policy: Policy) -> list[dict[str, Any]]:
    """The prompt sets named by the policy's check options (``prompts: default`` or a file)."""
    from qgate.prompts import load_prompt_set

    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in policy.checks:
        options = policy.check_options.get(spec.key)
        for option_name in PROMPT_SET_OPTIONS:
            value = getattr(options, option_name, None)
            if not isinstance(value, str) or not value:
                continue
            record: dict[str, Any] = {"check": spec.key, "option": option_name}
            try:
                prompt_set = load_prompt_set(value)
            except QgateError as exc:
                record.update(source=value, sha256=None, error=str(exc))
            else:
                record.update(
                    source=prompt_set.name,
                    sha256=prompt_set.digest,
                    prompts=len(prompt_set.prompts),
                )
            key = f"{record['source']}\0{record['sha256']}"
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


def plugin_records(registry: Registry) -> list[dict[str, Any]]:
    """Every plugin with its distribution, version and what it provides, sorted by plugin."""
    plugins: dict[str, dict[str, Any]] = {}
    kinds = (
        ("backend", registry.backends),
        ("check", registry.checks),
        ("reporter", registry.reporters),
        ("command", registry.commands),
    )
    for kind, items in kinds:
        for name, provided in items.items():
            entry = plugins.get(provided.plugin)
            if entry is None:
                entry = {"plugin": provided.plugin, **_distribution(provided.provider)}
                entry["provides"] = []
                plugins[provided.plugin] = entry
            entry["provides"].append(f"{kind}:{name}")
    for entry in plugins.values():
        entry["provides"].sort()
    return [plugins[name] for name in sorted(plugins)]


def _distribution(provider: str) -> dict[str, Any]:
    """``qgate-llm 0.1.0`` -> distribution and version; a plugin registered as a module or an
    object (``QGATE_PLUGINS``, tests) has neither, and keeps its provider text."""
    if provider.startswith(("module ", "object ")) or not provider:
        return {"distribution": None, "version": None, "source": provider}
    distribution, _, dist_version = provider.partition(" ")
    return {"distribution": distribution, "version": dist_version or None}


def library_versions(names: Sequence[str] = BACKEND_LIBRARIES) -> dict[str, str]:
    """Installed versions from package metadata (nothing is imported), or ``not installed``."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


@functools.lru_cache(maxsize=1)
def machine_facts() -> dict[str, Any]:
    """Platform, Python, CPU model, logical CPUs, total memory and, when ``nvidia-smi``
    answers quickly, the GPUs' names. Facts that cannot be read cheaply are left out."""
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu": _cpu_model() or platform.processor() or None,
        "logical_cpus": os.cpu_count(),
        "memory_bytes": _total_memory(),
    }
    gpus = _gpu_names()
    if gpus:
        facts["gpus"] = gpus
    return {k: v for k, v in facts.items() if v not in (None, "")}


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def _total_memory() -> int | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX, or the name is unknown here
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def _gpu_names() -> list[str]:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        completed = subprocess.run(
            [executable, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=GPU_QUERY_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if completed.returncode != 0:
        return []
    return [line.strip() for line in completed.stdout.splitlines() if line.strip()]


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def merge_provenance(blocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One provenance block for results merged from shards (or separate runs): every subject
    file recorded once, and the machine facts of each part, since shards run on different hosts."""
    present = [b for b in blocks if b]
    if not present:
        return {}
    merged = dict(present[0])
    subjects: dict[str, Any] = {}
    for block in present:
        for record in block.get("subjects") or []:
            subjects.setdefault(str(record.get("path")), record)
    merged["subjects"] = list(subjects.values())
    merged["machines"] = [block.get("machine") for block in present]
    return merged


def collect(
    *,
    registry: Registry,
    policy: Policy,
    options: BackendOptions,
    datasets: Sequence[Dataset],
    subjects: Sequence[Path],
    reference: ModelHandle | None,
    digests: DigestIndex,
    progress: Progress,
    hash_files: bool = True,
    cache: ReferenceCache | None = None,
) -> dict[str, Any]:
    """The ``provenance`` block of a run (see the module docstring)."""
    return {
        "format": PROVENANCE_FORMAT,
        "qgate_version": __version__,
        "subjects": [
            artifact_record(path, digests, progress=progress, hash_files=hash_files)
            for path in subjects
        ],
        "reference": artifact_record(
            reference.path, digests, progress=progress, handle=reference, hash_files=hash_files
        )
        if reference is not None
        else None,
        "policy": {
            "name": policy.name,
            "sha256": policy_sha256(policy),
            "files": [{"path": f, "sha256": _file_sha256(Path(f))} for f in policy.files],
            "backend_options": asdict(options),
        },
        "datasets": dataset_records(datasets),
        "prompt_sets": prompt_set_records(policy),
        "plugins": plugin_records(registry),
        "libraries": library_versions(),
        "machine": machine_facts(),
        "reference_cache": cache.run_record() if cache is not None else None,
    }
