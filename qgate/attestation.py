"""An in-toto Statement (v1) of a run's verdict, for ``qgate check --attestation FILE``.

The statement binds the verdict to the exact bytes judged: its ``subject`` lists every subject
file with its sha256 (a folder model contributes one entry per file, named
``folder/relative/path``), and its ``predicate`` says what was decided and under what: the
verdict, the policy's name and digest, each subject's and each result's verdict with value,
threshold and interval, the reference's and the datasets' digests, qgate's and the plugins'
versions, and when the run started and finished.

The statement is unsigned. Sign it with ``cosign`` or GitHub's ``actions/attest`` (see
``docs/provenance.md``): both wrap it in a DSSE envelope without changing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qgate.errors import ExitCode, QgateError
from qgate.results import CheckResult, RunReport
from qgate.text import writable

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://github.com/qgate-dev/qgate/attestation/verdict/v1"
#: the fields of each result carried into the predicate
_RESULT_FIELDS = (
    "check",
    "metric",
    "verdict",
    "value",
    "threshold",
    "comparison",
    "unit",
    "interval",
    "severity",
)


class AttestationError(QgateError):
    """The attestation file could not be written."""

    exit_code = ExitCode.INTERNAL_ERROR


class NotAttestable(Exception):
    """The run lacks what an attestation needs (e.g. an interrupted run hashed nothing)."""


def statement_subjects(report: RunReport) -> list[dict[str, Any]]:
    """The statement's ``subject``: one ``{name, digest: {sha256}}`` per subject file."""
    records = report.provenance.get("subjects") if report.provenance else None
    if not isinstance(records, list) or not records:
        raise NotAttestable("the results record no hashed subjects")
    subjects: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for record in records:
        if not isinstance(record, dict) or not record.get("sha256"):
            path = record.get("path") if isinstance(record, dict) else record
            why = (record.get("note") or record.get("error")) if isinstance(record, dict) else None
            raise NotAttestable(f"subject {path} was not hashed" + (f" ({why})" if why else ""))
        if record.get("kind") == "folder":
            entries = [
                (f"{record['name']}/{f['path']}", f["sha256"]) for f in record.get("files") or []
            ]
        else:
            entries = [(str(record["name"]), str(record["sha256"]))]
        for name, digest in entries:
            if (name, digest) not in seen:
                seen.add((name, digest))
                subjects.append({"name": name, "digest": {"sha256": digest}})
    if not subjects:
        raise NotAttestable("the subjects hold no files")
    return subjects


def _rfc3339(stamp: str) -> str:
    """``2025-01-01T10:00:00+00:00`` as ``2025-01-01T10:00:00Z`` (in-toto's convention)."""
    return stamp[:-6] + "Z" if stamp.endswith("+00:00") else stamp


def _digest(record: Any) -> dict[str, str] | None:
    sha = record.get("sha256") if isinstance(record, dict) else None
    return {"sha256": sha} if sha else None


def _result(result: CheckResult) -> dict[str, Any]:
    data = result.to_dict()  # non-finite numbers become "nan"/"inf" strings, as in the results
    return {"name": result.name, **{key: data[key] for key in _RESULT_FIELDS}}


def predicate(report: RunReport) -> dict[str, Any]:
    """What was decided about the subjects, under which policy, by which software."""
    provenance = report.provenance or {}
    policy = provenance.get("policy") or {}
    reference = provenance.get("reference")
    subject_records = provenance.get("subjects") or []
    subjects = []
    for index, subject in enumerate(report.subjects):
        record = subject_records[index] if index < len(subject_records) else {}
        subjects.append(
            {
                "name": record.get("name") or Path(subject.path).name,
                "path": subject.path,
                "digest": _digest(record),
                "verdict": subject.verdict.value,
                "results": [_result(result) for result in subject.results],
            }
        )
    return {
        "verdict": report.verdict.value,
        "incomplete": report.incomplete,
        "policy": {"name": report.policy, "sha256": policy.get("sha256")},
        "subjects": subjects,
        "reference": {
            "name": reference.get("name"),
            "path": reference.get("path"),
            "digest": _digest(reference),
        }
        if isinstance(reference, dict)
        else None,
        "datasets": [
            {"domain": d.get("domain"), "source": d.get("source"), "digest": _digest(d)}
            for d in provenance.get("datasets") or []
            if isinstance(d, dict)
        ],
        "promptSets": [
            {"source": p.get("source"), "digest": _digest(p)}
            for p in provenance.get("prompt_sets") or []
            if isinstance(p, dict)
        ],
        "qgateVersion": report.qgate_version or provenance.get("qgate_version"),
        "plugins": [
            {k: p.get(k) for k in ("plugin", "distribution", "version")}
            for p in provenance.get("plugins") or []
            if isinstance(p, dict)
        ],
        "libraries": provenance.get("libraries") or {},
        "command": report.environment.get("command"),
        "startedAt": _rfc3339(report.started_at),
        "finishedAt": _rfc3339(report.finished_at),
    }


def build_statement(report: RunReport) -> dict[str, Any]:
    """The in-toto Statement v1 for ``report``; raises :class:`NotAttestable`."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": statement_subjects(report),
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate(report),
    }


def write_attestation(report: RunReport, path: Path) -> str | None:
    """Write the statement to ``path`` (atomically). Returns why nothing was written, when the
    run cannot be attested (an interrupted run hashed nothing), else ``None``."""
    try:
        statement = build_statement(report)
    except NotAttestable as exc:
        return str(exc)
    # file names are untrusted: a non-UTF-8 name arrives as lone surrogates
    text = writable(json.dumps(statement, indent=2, ensure_ascii=False, allow_nan=False)) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise AttestationError(
            f"cannot write the attestation {path}: {exc.strerror or exc}"
        ) from None
    return None
