"""The steps of qgate's GitHub Action, by name: what ``qgate github STEP`` runs.

``run`` and ``cache-key`` record step outputs; ``outputs``, ``summary``, ``annotate`` and
``comment`` report the results the ``run`` step wrote, and only those (:mod:`.results`). Every
step returns 0: the action's last step exits with the code ``run`` recorded, so the summary,
annotations and artifacts are still written when the gate fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from qgate_github.cache_key import cache_directory, cache_key
from qgate_github.comment import post_comment
from qgate_github.results import StepResults, step_results
from qgate_github.run import run_step
from qgate_github.summary import summary_markdown, write_summary
from qgate_github.untrusted import neutralise, neutralise_report
from qgate_github.workflow import annotation_lines, set_output, workflow_command


def run(step: str, env: Mapping[str, str]) -> int:
    """Run the step named ``step`` (one of :data:`qgate_github.command.STEPS`) with the
    action's environment."""
    if step in _BEFORE_RESULTS:
        return _BEFORE_RESULTS[step](env)
    results = step_results(env)
    if step == "outputs":
        return _outputs_step(results, env)
    if step == "annotate":
        return _annotate_step(results)
    markdown = summary_markdown(results, _exit_code(env))
    if step == "summary":
        write_summary(markdown, env=env)
        return 0
    print(post_comment(env, markdown))  # step == "comment"
    return 0


def _run_step(env: Mapping[str, str]) -> int:
    outcome = run_step(env)
    set_output("exit-code", str(outcome.exit_code), env=env)
    set_output("run-id", outcome.run_id, env=env)
    set_output("invocation-id", outcome.invocation_id, env=env)
    set_output("results-file", outcome.results_file, env=env)
    return 0


def _cache_key_step(env: Mapping[str, str]) -> int:
    directory = cache_directory(env)
    set_output("dir", directory, env=env)
    try:
        set_output("key", cache_key({**env, "QGATE_CACHE_DIR": directory}), env=env)
    except Exception as exc:  # no key means no cache: slower, never wrong
        print(workflow_command("warning", f"no reference cache: {exc}", title="qgate"))
        set_output("key", "", env=env)
    return 0


#: the steps that run before there are results to report
_BEFORE_RESULTS: dict[str, Callable[[Mapping[str, str]], int]] = {
    "run": _run_step,
    "cache-key": _cache_key_step,
}


def _outputs_step(results: StepResults, env: Mapping[str, str]) -> int:
    report = results.report
    json_path = env.get("QGATE_JSON", "").strip()
    html_path = env.get("QGATE_HTML", "").strip()
    written = report is not None
    set_output("verdict", report.verdict.value if report is not None else "error", env=env)
    set_output("report", html_path if written and Path(html_path).is_file() else "", env=env)
    set_output("results", json_path if written and Path(json_path).is_file() else "", env=env)
    set_output("artifact-name", artifact_name(env), env=env)
    return 0


def _annotate_step(results: StepResults) -> int:
    if results.report is None:
        message = f"no results this step can trust: {results.problem}"
        print(workflow_command("error", neutralise(message), title="qgate: error"))
        return 0
    for line in annotation_lines(neutralise_report(results.report)):
        print(line)
    return 0


def artifact_name(env: Mapping[str, str]) -> str:
    """The input ``artifact-name``, or ``qgate-report`` (``-shard-K-of-N`` for a shard)."""
    if env.get("QGATE_ARTIFACT_NAME"):
        return env["QGATE_ARTIFACT_NAME"]
    shard = env.get("QGATE_SHARD", "").strip()
    if shard and env.get("QGATE_COMMAND", "check") == "check":
        index, _, count = shard.partition("/")
        return f"qgate-report-shard-{index.strip()}-of-{count.strip()}"
    return "qgate-report"


def _exit_code(env: Mapping[str, str]) -> int | None:
    value = env.get("QGATE_EXIT_CODE", "").strip()
    return int(value) if value.lstrip("-").isdigit() else None
