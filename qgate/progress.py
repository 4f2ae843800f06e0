"""Progress on long work, written to stderr so stdout stays clean for reports.

On a terminal the current step is redrawn in place; in CI logs a line is printed at most every
few seconds per task, so a 30-minute run shows it is alive without flooding the log.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from qgate.text import printable


class Progress:
    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 5.0
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last: dict[str, float] = {}
        self._dirty = False

    def log(self, message: str) -> None:
        """A line worth keeping in the log (a model loaded, a check finished)."""
        if not self.enabled:
            return
        self._clear()
        print(f"qgate: {printable(message)}", file=self.stream, flush=True)

    def update(self, task: str, done: int, total: int, detail: str = "") -> None:
        """The state of a long task; shown in place on a terminal, throttled in logs."""
        if not self.enabled:
            return
        text = printable(f"qgate: {task} {done}/{total}" + (f" {detail}" if detail else ""))
        if self._tty:
            print(f"\r\033[K{text}", end="", file=self.stream, flush=True)
            self._dirty = True
            if done >= total:
                self._clear()
            return
        now = time.monotonic()
        if done >= total or now - self._last.get(task, 0.0) >= self.interval:
            self._last[task] = now
            print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._dirty:
            print("\r\033[K", end="", file=self.stream, flush=True)
            self._dirty = False
