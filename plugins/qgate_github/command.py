"""``qgate github STEP`` (and ``python -m qgate_github STEP``): one step of the Action."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import click

#: every step, in the order action.yml runs them
STEPS = ("cache-key", "run", "outputs", "summary", "annotate", "comment")


@click.command("github")
@click.argument("step", type=click.Choice(STEPS))
@click.pass_obj
def github(env: Any, step: str) -> int:
    """Run one step of qgate's GitHub Action (action.yml), configured by QGATE_* variables.

    Steps, in the order the action runs them: cache-key, run, outputs, summary, annotate,
    comment. Each exits 0; the action fails with the exit code the run step recorded.
    """
    from qgate_github.steps import run  # the steps' imports only when a step runs

    return run(step, dict(env) if isinstance(env, Mapping) else dict(os.environ))


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Run the step ``argv`` names with ``env`` for the environment (default: ``os.environ``)."""
    code: int = github.main(
        args=list(argv) if argv is not None else None,
        prog_name="python -m qgate_github",
        standalone_mode=False,
        obj=env,
    )
    return code
