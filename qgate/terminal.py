"""What the terminal that qgate prints to can show: its width, whether to colour, how much to say.

The console reporter and the progress line read one :class:`Terminal`, detected once from the
stream and the environment: the width from the terminal (or ``$COLUMNS``), colour when the stream
is a terminal, turned off by ``NO_COLOR`` and on by ``FORCE_COLOR`` (https://no-color.org; a CI
log is no terminal but shows colour), and the verbosity from ``-v``/``-q``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

#: the width used when the stream is no terminal and ``$COLUMNS`` is not set (a CI log)
DEFAULT_WIDTH = 120
#: narrower than this, a table cannot show a verdict, a name and a value side by side
MIN_WIDTH = 60

#: ANSI SGR codes per verdict: red for a failure, bold red for an error, yellow, green, dim
VERDICT_STYLES: dict[str, str] = {
    "error": "1;31",
    "fail": "31",
    "warn": "33",
    "pass": "32",
    "skip": "2",
}


@dataclass(frozen=True)
class Terminal:
    """How to print for one stream. ``verbosity``: -1 quiet (``-q``), 0 normal, 1 verbose."""

    width: int = DEFAULT_WIDTH
    colour: bool = False
    verbosity: int = 0

    @classmethod
    def detect(
        cls,
        stream: TextIO | None = None,
        *,
        verbosity: int = 0,
        environ: Mapping[str, str] | None = None,
    ) -> Terminal:
        """The terminal behind ``stream`` (default stdout) under ``environ`` (default os.environ)."""
        stream = stream if stream is not None else sys.stdout
        environ = environ if environ is not None else os.environ
        tty = is_terminal(stream)
        return cls(
            width=terminal_width(tty, environ),
            colour=wants_colour(tty, environ),
            verbosity=verbosity,
        )

    def style(self, text: str, verdict: str) -> str:
        """``text`` in the colour of ``verdict`` when colour is on; as it is otherwise."""
        code = VERDICT_STYLES.get(verdict)
        if not self.colour or code is None or not text:
            return text
        return f"\033[{code}m{text}\033[0m"


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def wants_colour(tty: bool, environ: Mapping[str, str]) -> bool:
    """``NO_COLOR`` (any non-empty value) wins, then ``FORCE_COLOR`` (non-empty, not ``0``),
    then whether the stream is a terminal that is not ``TERM=dumb``."""
    if environ.get("NO_COLOR"):
        return False
    force = environ.get("FORCE_COLOR", "")
    if force and force.lower() not in ("0", "false", "no"):
        return True
    return tty and environ.get("TERM", "") != "dumb"


def terminal_width(tty: bool, environ: Mapping[str, str]) -> int:
    """``$COLUMNS`` when set, else the terminal's width, else :data:`DEFAULT_WIDTH`; never
    below :data:`MIN_WIDTH`."""
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif tty:
        width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    else:
        width = DEFAULT_WIDTH
    return max(MIN_WIDTH, width)
