"""Progress on long work, written to stderr so stdout stays clean for reports.

A run plans its units of work (a check on a subject) up front with :meth:`Progress.plan`, starts
each with :meth:`Progress.begin`, and every line shown then carries the overall position, the
elapsed time and an estimate of the time left (formatted by ``tqdm``): ``qgate: [3/14 checks,
01:12 elapsed, ETA 04:40] gemma-q2_k.gguf · perplexity: scoring [en] 3/8 chunks``. On a terminal
that line is redrawn in place and fitted to the terminal's width; in a CI log a line is printed
at most every few seconds per task, so a 30-minute run shows it is alive without flooding the log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from qgate.terminal import Terminal, is_terminal
from qgate.text import printable

#: the position, elapsed time and ETA; ``remaining`` is ``?`` until a unit has finished
METER_FORMAT = "{n_fmt}/{total_fmt} checks, {elapsed} elapsed, ETA {remaining}"
#: qgate's one redraw sequence on a terminal: back to the start of the line, clear it
REDRAW = "\r\033[K"


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self._clock = clock
        self._tty = is_terminal(self.stream)
        self._width = width
        self._last: dict[str, float] = {}
        self._dirty = False
        self._planned = 0
        self._started: float | None = None
        #: units begun so far; the one running is number ``_begun``, the finished ``_begun - 1``
        self._begun = 0
        self._unit = ""

    # -- the plan --------------------------------------------------------------------------------
    def plan(self, units: int) -> None:
        """Add ``units`` to the work the run expects (its checks on its subjects)."""
        self._planned += max(0, units)
        if self._started is None:
            self._started = self._clock()

    def drop(self, units: int) -> None:
        """Planned units that will not run after all (a ``when:`` that does not match, a subject
        that could not be opened): the estimate stops waiting for them."""
        self._planned = max(self._begun, self._planned - max(0, units))

    def begin(self, unit: str) -> None:
        """The next unit of the plan starts: ``unit`` names it on the progress line."""
        self._begun += 1
        self._planned = max(self._planned, self._begun)
        self._unit = unit

    def meter(self) -> str:
        """``3/14 checks, 01:12 elapsed, ETA 04:40``: finished units, elapsed time and the time
        left at the average pace so far; empty without a plan."""
        if not self._planned or self._started is None:
            return ""
        done = max(0, self._begun - 1)
        elapsed = self._clock() - self._started
        return tqdm.format_meter(done, self._planned, elapsed, bar_format=METER_FORMAT)

    # -- lines ---------------------------------------------------------------------------------
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
        text = self._status(f"{task} {done}/{total}" + (f" {detail}" if detail else ""))
        if self._tty:
            print(REDRAW + self._fit(text), end="", file=self.stream, flush=True)
            self._dirty = True
            if done >= total:
                self._clear()
            return
        now = self._clock()
        if done >= total or now - self._last.get(task, float("-inf")) >= self.interval:
            self._last[task] = now
            print(text, file=self.stream, flush=True)

    def _status(self, task: str) -> str:
        meter = self.meter()
        where = f"[{meter}] " if meter else ""
        unit = f"{printable(self._unit)}: " if self._unit else ""
        return f"qgate: {where}{unit}{printable(task)}"

    def _fit(self, text: str) -> str:
        """One terminal line: a redrawn line that wraps cannot be redrawn in place."""
        width = self._width or Terminal.detect(self.stream).width
        return text if len(text) < width else text[: width - 2] + "…"

    def _clear(self) -> None:
        if self._dirty:
            print(REDRAW, end="", file=self.stream, flush=True)
            self._dirty = False
