"""What a run measures about itself: counters, wall time per phase, and progress for people.

One :class:`Instruments` object goes to every part of a run (the runner, each model handle, the
shared scoring pass, the generations, the reference cache), instead of three loose arguments.
Counters prove that work was shared (``model_loads``, ``scoring_passes``, cache hits); timings
say where the time went (``qgate check --profile``); progress keeps a long run visibly alive.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from qgate.progress import Progress


@dataclass
class Instruments:
    counters: Counter[str] = field(default_factory=Counter)
    timings: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to ``phase`` (also when the block raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] += time.perf_counter() - started

    def log(self, message: str) -> None:
        self.progress.log(message)

    def update(self, task: str, done: int, total: int, detail: str = "") -> None:
        self.progress.update(task, done, total, detail)
