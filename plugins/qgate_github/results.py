"""The results a step after ``run`` may report: only the file this step's qgate wrote.

A results file in the workspace proves nothing (an earlier run or the pull request may have put it
there): it is reported only when its run id and invocation id are the ones the ``run`` step
recorded and its verdicts agree with its numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qgate.errors import UsageError
from qgate.integrity import read_results
from qgate.results import RunReport


@dataclass(frozen=True)
class StepResults:
    """The results a step may report, or why there are none it can trust."""

    report: RunReport | None
    #: why ``report`` is None, shown in the summary, the annotation and the log
    problem: str = ""
    #: the exit code a zero exit becomes when there are no trustworthy results: 3 (qgate wrote
    #: nothing, or something it should not have), 2 (the inputs were another run's results)
    exit_code: int = 3


def load_results(
    path: str | None, *, run_id: str, invocation_id: str, require_invocation: bool = False
) -> StepResults:
    """The results file at ``path`` if it is this run's and its verdicts hold.

    ``invocation_id`` (when given) names the one qgate process whose file this is: anything else at
    the path is stale (an earlier run, a file committed by the pull request) or a copy. ``run_id``
    (when given) names the run. With neither, a stale file could not be told from a fresh one, so
    nothing is trusted. The verdicts are recomputed from the numbers (:func:`read_results`).
    """
    if require_invocation and not invocation_id:
        return StepResults(None, "qgate wrote no results in this step (the log says why)")
    if not run_id and not invocation_id:
        return StepResults(
            None,
            "no run id to check the results file against (QGATE_RUN_ID): a stale or copied "
            "file could not be told from this run's",
        )
    if not path or not Path(path).is_file():
        return StepResults(None, f"qgate wrote no results file ({path or 'no json path'})")
    try:
        report = read_results(Path(path))
    except UsageError as exc:
        return StepResults(None, f"the results file was refused: {exc}")
    if invocation_id and report.invocation_id != invocation_id:
        return StepResults(
            None,
            f"{path} was written by another qgate process (invocation "
            f"{report.invocation_id or 'none'}, not this step's {invocation_id}): a stale, "
            "committed or copied file is never reported",
        )
    if run_id and report.run_id != run_id:
        return StepResults(
            None,
            f"{path} belongs to run {report.run_id or '(none)'!r}, not to this run "
            f"{run_id!r}: results of another run are never reported as this run's",
            exit_code=2,
        )
    return StepResults(report)


def step_results(env: Mapping[str, str]) -> StepResults:
    """The results for the steps after ``run``: the file that step wrote (``QGATE_STEP_RESULTS``,
    outside the workspace) or the ``json`` path, checked against the ids ``run`` recorded."""
    return load_results(
        env.get("QGATE_STEP_RESULTS", "").strip() or env.get("QGATE_JSON", "").strip() or None,
        run_id=env.get("QGATE_RUN_ID", "").strip(),
        invocation_id=env.get("QGATE_INVOCATION_ID", "").strip(),
        require_invocation=env.get("QGATE_EXPECT_INVOCATION", "").strip() == "true",
    )
