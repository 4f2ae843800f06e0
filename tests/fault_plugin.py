"""Check plugins that fail on purpose, for tests/test_reliability.py.

Loaded like a plugin under development: ``QGATE_PLUGINS=tests.fault_plugin``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np

from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.reporter import Reporter
from qgate.results import CheckResult, RunReport


class OutOfMemory(Check):
    """Asks numpy for 8 PiB, which no machine has: a real ``MemoryError``, nothing allocated."""

    name = "out-of-memory"
    description = "runs out of memory (tests only)"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        huge = np.ones(1 << 50, dtype=np.float64)
        return [ctx.result("sum", float(huge.sum()))]


@dataclass
class ExitOptions:
    how: Literal["sys-exit-0", "argparse-help", "generator-exit", "keyboard-interrupt"] = option(
        "sys-exit-0", "how the check's library ends the process"
    )


class EndsTheProcess(Check):
    """A check whose library tries to end the process, as argparse's ``--help`` or click's
    standalone mode do: a check must never decide qgate's exit code."""

    name = "ends-the-process"
    description = "calls sys.exit() inside run() (tests only)"
    Options = ExitOptions

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        how = ctx.options.how
        if how == "sys-exit-0":
            sys.exit(0)
        if how == "argparse-help":
            argparse.ArgumentParser(prog="some-library").parse_args(["--help"])
        if how == "generator-exit":
            raise GeneratorExit
        raise KeyboardInterrupt


class ExitingReporter(Reporter):
    """A report format whose library calls ``sys.exit(0)`` while rendering."""

    name = "exits"
    description = "calls sys.exit(0) while rendering (tests only)"

    def render(self, report: RunReport) -> str:
        sys.exit(0)


@hookimpl
def qgate_checks() -> list[Check]:
    return [OutOfMemory(), EndsTheProcess()]


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [ExitingReporter()]
