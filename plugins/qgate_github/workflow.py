"""GitHub workflow commands and step outputs, with everything untrusted in them escaped.

A workflow command is a line ``::command key=value::message`` that the runner acts on. qgate's
messages carry what a model says about itself, so every message and property is escaped by the
rules of actions/toolkit: a model's name can never end one command and start another.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

from qgate.results import RunReport, Verdict

#: GitHub shows at most 10 error and 10 warning annotations per step
ANNOTATION_LIMIT = 10


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (actions/toolkit ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: ``escape_data`` plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str) -> str:
    """``::command key=value,key=value::message`` with everything escaped."""
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def annotation_lines(report: RunReport, *, limit: int = ANNOTATION_LIMIT) -> list[str]:
    """One ``::error`` per failing or erroring result, one ``::warning`` per warning."""
    lines: list[str] = []
    left_out = {"error": 0, "warning": 0}
    emitted = {"error": 0, "warning": 0}
    for subject, result in report.results:
        if result.verdict.is_blocking:
            kind = "error"
        elif result.verdict is Verdict.WARN:
            kind = "warning"
        else:
            continue
        if emitted[kind] >= limit:
            left_out[kind] += 1
            continue
        emitted[kind] += 1
        title = f"qgate {result.verdict.value}: {subject.label}: {result.name}"
        lines.append(workflow_command(kind, result.message or result.verdict.value, title=title))
    if report.incomplete:
        lines.append(
            workflow_command(
                "error",
                "the run was interrupted or could not finish: some checks never ran",
                title="qgate: incomplete run",
            )
        )
    if any(left_out.values()):
        lines.append(
            workflow_command(
                "notice",
                f"{left_out['error']} more errors and {left_out['warning']} more warnings are in "
                "the step summary and the reports",
                title="qgate: more results",
            )
        )
    return lines


def set_output(name: str, value: str, *, env: Mapping[str, str] | None = None) -> None:
    """Append ``name=value`` to ``$GITHUB_OUTPUT`` (a heredoc when the value has newlines)."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_OUTPUT")
    if not path:
        print(f"{name}={value}")  # outside Actions: show it
        return
    if "\n" in value or "\r" in value:
        delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
        text = f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
    else:
        text = f"{name}={value}\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
