"""The Markdown summary of a step: rendered from the checked results, neutralised, truncated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from qgate.results import RunReport
from qgate_github.results import StepResults
from qgate_github.untrusted import md_text, neutralise_report

#: GitHub keeps at most 1 MiB of step summary per step
SUMMARY_LIMIT = 1_000_000


def render_markdown(report: RunReport) -> str:
    """The ``markdown`` reporter's text (through the registry, like ``qgate report``)."""
    from qgate.plugins import Registry

    reporter = Registry.from_environment().reporters.get("markdown")
    if reporter is None:
        return f"## qgate: {report.verdict.value.upper()}\n\n(the markdown reporter is not installed)\n"
    return str(reporter.item.render(report))


def summary_markdown(results: StepResults, exit_code: int | None) -> str:
    """The summary: the Markdown report rendered from the checked results (never a Markdown
    file found on disk, which may be stale), with what the model said neutralised."""
    report = results.report
    if report is None:
        code = "unknown" if exit_code is None else str(exit_code)
        return (
            "## qgate: ERROR\n\n"
            f"No results this step can trust: {md_text(results.problem)}\n\n"
            f"qgate exited with code {code}; the job log says why.\n"
        )
    text = render_markdown(neutralise_report(report))
    if report.shard:
        text += shard_note(report.shard)
    return text


def shard_note(shard: Mapping[str, Any]) -> str:
    """The note under a shard's summary. The shard record comes from the results file, so every
    value in it is printed as escaped text or a count, never as Markdown."""
    units, planned = shard.get("units"), shard.get("planned_units")
    done = len(units) if isinstance(units, list) else 0
    total = len(planned) if isinstance(planned, list) else 0
    return (
        f"\n> Shard {_number(shard.get('index'))}/{_number(shard.get('count'))}: {done} of "
        f"{total} units of this run; the merged verdict comes from `qgate merge`.\n"
    )


def _number(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return md_text(value)


def truncate(text: str, limit: int, note: str) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(note) - 2] + "\n\n" + note


def write_summary(text: str, *, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    text = truncate(
        text, SUMMARY_LIMIT, "_Summary truncated: the full report is in the artifacts._\n"
    )
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        print(text)
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
