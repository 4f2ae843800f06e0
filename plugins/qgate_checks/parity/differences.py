"""A named difference between the subject and the reference, and how the parity checks show it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qgate.backend import SpecialToken
from qgate.figures import Table
from qgate.text import writable

#: differences named in a result's message; the table lists them all
LISTED = 4


@dataclass(frozen=True)
class Difference:
    """``what`` is ``subject`` in the subject and ``reference`` in the reference."""

    what: str
    subject: Any
    reference: Any
    note: str = ""  #: why, where a runtime reads the value otherwise

    def describe(self) -> str:
        text = f"{self.what}: {shown(self.subject)} vs the reference's {shown(self.reference)}"
        return f"{text} ({self.note})" if self.note else text


def shown(value: Any, limit: int = 60) -> str:
    """A value for a message: text from the model quoted with its escapes (``repr``), so a
    control character or a line break cannot reach a log, and cut to ``limit`` characters."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, SpecialToken):
        text = f"id {value.id} {value.text!r}" if value.text is not None else f"id {value.id}"
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return writable(text if len(text) <= limit else text[: limit - 1] + "…")


def listed(differences: Sequence[Difference], limit: int = LISTED) -> str:
    """The first ``limit`` differences, and how many more there are."""
    text = "; ".join(d.describe() for d in differences[:limit])
    more = len(differences) - limit
    return f"{text}; and {more} more" if more > 0 else text


def table(title: str, differences: Sequence[Difference]) -> Table:
    return Table(
        title,
        ["what", "subject", "reference", "note"],
        [[d.what, shown(d.subject), shown(d.reference), d.note] for d in differences],
    )
