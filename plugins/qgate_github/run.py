"""The ``run`` step: qgate in a fresh directory, its reports copied to the inputs' paths."""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qgate_github.arguments import REPORTS, InputError, output_paths, qgate_arguments
from qgate_github.results import load_results
from qgate_github.workflow import workflow_command


def run_qgate(args: Sequence[str]) -> int:
    """Run ``qgate ARGS``, its output fenced so that nothing it prints (a model's name included)
    is taken as a workflow command. Returns qgate's exit code."""
    token = secrets.token_hex(16)
    print(f"::stop-commands::{token}", flush=True)
    try:
        print(f"$ qgate {shlex.join(args)}", flush=True)  # file names are untrusted too
        code = subprocess.call([sys.executable, "-m", "qgate", *args])
    finally:
        print(f"::{token}::", flush=True)
    return code


def step_run_id(env: Mapping[str, str]) -> str:
    """The run id this step gives qgate and checks the results against: the ``run-id`` input,
    else the workflow run's (``github-run-<GITHUB_RUN_ID>``), else a random one.

    Every job of a workflow run gets the same one, so the shards of a matrix and the merge job
    agree without being told, also after a re-run of the failed jobs (which keeps the run id and
    only bumps the attempt). The step's own results are told apart by their invocation id.
    """
    given = env.get("QGATE_RUN_ID", "").strip()
    if given:
        return given
    if env.get("GITHUB_RUN_ID", "").strip():
        return f"github-run-{env['GITHUB_RUN_ID'].strip()}"
    return f"local-{secrets.token_hex(8)}"


def clear_stale(paths: Sequence[Path]) -> None:
    """Remove the files at the output paths before qgate runs: a report left there (committed by
    the pull request, or written by an earlier step) must not be uploaded or read as this run's.
    A symlink is removed, never followed."""
    for path in paths:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            raise InputError(f"the report path {path} exists and is not a file")


def fresh_directory(env: Mapping[str, str]) -> Path:
    """A new, empty directory for this step's reports, outside the workspace (``$RUNNER_TEMP``),
    so no file the pull request put there can be taken for one qgate wrote."""
    base = env.get("RUNNER_TEMP", "").strip() or None
    return Path(tempfile.mkdtemp(prefix="qgate-run-", dir=base))


def copy_reports(written: Mapping[str, Path], targets: Mapping[str, Path]) -> list[str]:
    """Copy the reports qgate wrote to the inputs' paths; returns what could not be copied."""
    failures = []
    for name, target in targets.items():
        source = written.get(name)
        if source is None or not source.is_file():
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        except OSError as exc:
            failures.append(f"{name} report to {target}: {exc.strerror or exc}")
    return failures


@dataclass(frozen=True)
class RunOutcome:
    """What the ``run`` step records: the exit code the gate ends with, the run id, and the
    identity and place of the results this step's qgate wrote."""

    exit_code: int
    run_id: str
    invocation_id: str = ""
    results_file: str = ""


def run_step(env: Mapping[str, str]) -> RunOutcome:
    """Run qgate for the inputs into a fresh directory and copy its reports to the inputs' paths.

    The exit code is 0 only when the step holds results that qgate wrote in this step, for this
    run, whose verdicts agree with their numbers: a zero exit without them becomes an error.
    """
    command = env.get("QGATE_COMMAND", "check").strip() or "check"
    run_id = step_run_id(env)
    try:
        targets = output_paths(env)
        clear_stale(list(targets.values()))
        fresh = fresh_directory(env)
        # the JSON results always: the steps after this one read them, whatever the inputs say
        written = {name: fresh / REPORTS[name] for name in REPORTS if name in targets}
        written["json"] = fresh / REPORTS["json"]
        args = qgate_arguments(env, reports=written, run_id=run_id)
    except InputError as exc:
        print(workflow_command("error", str(exc), title="qgate: invalid input"))
        return RunOutcome(2, run_id)
    code = run_qgate(args)
    failures = copy_reports(written, targets)
    for failure in failures:
        print(workflow_command("error", f"could not copy the {failure}", title="qgate"))
    if command == "baseline":
        return RunOutcome(code, run_id)
    results = load_results(str(written["json"]), run_id=run_id, invocation_id="")
    if results.report is None or failures:
        problem = results.problem or "the reports could not be copied to their paths"
        print(workflow_command("error", problem, title="qgate: no results to report"))
        return RunOutcome(code or results.exit_code, run_id)
    return RunOutcome(code, run_id, results.report.invocation_id, str(written["json"]))
