"""The ``qgate`` command line for the action's inputs (environment variables ``QGATE_*``)."""

from __future__ import annotations

import glob
import re
import shlex
from collections.abc import Mapping
from pathlib import Path


class InputError(Exception):
    """An action input is wrong (e.g. a glob matches nothing): exit code 2, like qgate's."""


_GLOB = re.compile(r"[*?\[]")


def expand(patterns: str, *, what: str) -> list[str]:
    """Globs separated by spaces or newlines -> paths; a glob matching nothing is an error."""
    found: list[str] = []
    for pattern in patterns.split():
        if _GLOB.search(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise InputError(f"no {what} matches {pattern!r}")
            found.extend(m for m in matches if m not in found)
        elif pattern not in found:
            found.append(pattern)
    return found


#: the reports the action writes, by input name, and their file names in the step's directory
REPORTS = {
    "junit": "junit.xml",
    "html": "report.html",
    "json": "results.json",
    "markdown": "summary.md",
}


def report_inputs(env: Mapping[str, str]) -> dict[str, str]:
    """The reports' paths the inputs name (``junit``, ``html``, ``json``, ``markdown``)."""
    return {
        name: env[f"QGATE_{name.upper()}"].strip()
        for name in REPORTS
        if env.get(f"QGATE_{name.upper()}", "").strip()
    }


def output_paths(env: Mapping[str, str]) -> dict[str, Path]:
    """:func:`report_inputs` as paths."""
    return {name: Path(path) for name, path in report_inputs(env).items()}


def qgate_arguments(
    env: Mapping[str, str], *, reports: Mapping[str, str | Path] | None = None, run_id: str = ""
) -> list[str]:
    """The ``qgate`` command line for the action's inputs.

    ``reports`` maps report names to the paths qgate writes (default: the inputs' paths). File
    names from the inputs and their globs come last, after ``--``: a file named ``--n-ctx=16``
    is a file, not an option.
    """
    command = env.get("QGATE_COMMAND", "check").strip() or "check"
    policy = env.get("QGATE_POLICY", "").strip() or "production"
    reference = env.get("QGATE_REFERENCE", "").strip()
    cache_dir = env.get("QGATE_CACHE_DIR", "").strip()
    extra = shlex.split(env.get("QGATE_ARGS", ""))
    if reports is None:
        reports = report_inputs(env)
    report_args = [arg for name, path in reports.items() for arg in (f"--{name}", str(path))]
    if command == "check":
        models = expand(env.get("QGATE_MODELS", ""), what="model")
        if not models:
            raise InputError("the models input is empty: name the quants to check")
        args = ["check", "--policy", policy]
        if reference:
            args += ["--reference", reference]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        if env.get("QGATE_SHARD", "").strip():
            args += ["--shard", env["QGATE_SHARD"].strip()]
        if run_id:
            args += ["--run-id", run_id]
        return [*args, *report_args, *extra, "--", *models]
    if command == "baseline":
        if not reference:
            raise InputError("command baseline needs the reference input")
        args = ["baseline", "--policy", policy]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        return [*args, *extra, "--", reference]
    if command == "merge":
        files = expand(env.get("QGATE_RESULTS", ""), what="results file")
        if not files:
            raise InputError("the results input is empty: name the shards' results files")
        return ["merge", *report_args, *extra, "--", *files]
    raise InputError(f"unknown command {command!r}: use check, baseline or merge")
