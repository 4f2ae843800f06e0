"""Check plugins that fail on purpose, for tests/test_reliability.py.

Loaded like a plugin under development: ``QGATE_PLUGINS=tests.fault_plugin``.
"""

from __future__ import annotations

import numpy as np

from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.results import CheckResult


class OutOfMemory(Check):
    """Asks numpy for 8 PiB, which no machine has: a real ``MemoryError``, nothing allocated."""

    name = "out-of-memory"
    description = "runs out of memory (tests only)"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        huge = np.ones(1 << 50, dtype=np.float64)
        return [ctx.result("sum", float(huge.sum()))]


@hookimpl
def qgate_checks() -> list[Check]:
    return [OutOfMemory()]
