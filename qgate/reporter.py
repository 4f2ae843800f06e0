"""The reporter interface: turn a :class:`~qgate.results.RunReport` into an output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from qgate.results import RunReport
from qgate.terminal import Terminal


class Reporter(ABC):
    """A report format. A reporter with ``writes_file`` gets a ``--NAME FILE`` option on
    ``qgate check``, ``qgate report`` and ``qgate merge``; the others print to stdout."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    writes_file: ClassVar[bool] = True

    @abstractmethod
    def render(self, report: RunReport) -> str:
        """The whole report as text. Every model-provided string must be escaped for the format."""

    def render_for(self, report: RunReport, terminal: Terminal) -> str:
        """The report as printed on ``terminal`` (its width, colour and ``-v``/``-q``
        verbosity). A printing reporter (``writes_file = False``) may override it; by default
        it is :meth:`render`."""
        return self.render(report)

    def write(self, report: RunReport, path: Path) -> None:
        """Write the report, atomically, so a crash never leaves half a file behind."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.render(report), encoding="utf-8")
        tmp.replace(path)
