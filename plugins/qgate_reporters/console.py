"""The ``console`` reporter: what a person reads at the end of a run, on a terminal or a CI log.

Subjects that failed come first and, inside each, the results that failed: the first screen
shows what blocks the gate. Passing results are counted, not listed, unless ``-v``; ``-q`` keeps
only what blocks. Lines fit the terminal's width, and verdicts are coloured where the terminal
wants colour (:class:`qgate.terminal.Terminal`: ``NO_COLOR``, ``FORCE_COLOR``). Every string from
the results is cleaned of escape sequences and control characters before qgate adds its own
colour codes, so a model label cannot drive the terminal.
"""

from __future__ import annotations

import unicodedata

from qgate.hookspecs import hookimpl
from qgate.reporter import Reporter
from qgate.results import CheckResult, RunReport, SubjectReport, Verdict
from qgate.terminal import Terminal
from qgate.text import printable, writable
from qgate_reporters._common import (
    all_results,
    by_severity,
    counters,
    counts_text,
    interval_text,
    one_line,
    subjects_worst_first,
    value_summary,
    value_text,
    verdict_counts,
)
from qgate_reporters.ladder import quant_ladder

#: the width of the plain rendering (``render``), used where there is no terminal to ask
LINE_WIDTH = 120
_NAME_MAX = 40
_VALUE_MAX = 48
_MESSAGE_MIN = 20
#: the check and value columns are never cut narrower than this
_NARROWEST = 12
_VERDICT_WIDTH = 7  # "VERDICT", "ERROR"
_INDENT = "  "
_GAP = "  "
#: the verdicts listed at each verbosity (the others are counted on one line)
_SHOWN: dict[int, frozenset[Verdict]] = {
    -1: frozenset({Verdict.ERROR, Verdict.FAIL}),
    0: frozenset({Verdict.ERROR, Verdict.FAIL, Verdict.WARN, Verdict.SKIP}),
    1: frozenset(Verdict),
}


def char_width(char: str) -> int:
    """Terminal columns taken by ``char``: 0 for combining marks, 2 for wide CJK characters."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(c) for c in text)


def fit(text: str, width: int, *, pad: bool = True) -> str:
    """``text`` cut (with an ellipsis) to ``width`` columns, padded with spaces when ``pad``."""
    if text_width(text) > width:
        out, used = [], 0
        for char in text:
            w = char_width(char)
            if used + w > width - 1:
                break
            out.append(char)
            used += w
        text = "".join(out) + "…"
    if pad:
        text += " " * max(0, width - text_width(text))
    return text


def wrap(text: str, width: int) -> list[str]:
    """``text`` broken into lines of at most ``width`` columns, at spaces where it can be."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if text_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while text_width(word) > width:  # a word longer than the line: cut it
            head = fit(word, width + 1, pad=False)[:-1]
            lines.append(head)
            word = word[len(head) :]
        line = word
    return [*lines, line] if line else lines or [""]


def clean(text: object) -> str:
    """Untrusted text as one printable line: no escape sequences, controls or line breaks."""
    return printable(one_line(text))


class ConsoleReporter(Reporter):
    """Per subject, worst first: a header and the results that need reading; then the ladder,
    the counters and the overall verdict."""

    name = "console"
    description = "a summary on stdout, failures first, fitted to the terminal"
    writes_file = False

    def render(self, report: RunReport) -> str:
        return self.render_for(report, Terminal(width=LINE_WIDTH))

    def render_for(self, report: RunReport, terminal: Terminal) -> str:
        width = terminal.width
        title = (
            f"qgate {clean(report.qgate_version)}".rstrip() + f" | policy: {clean(report.policy)}"
        )
        lines = [fit(title, width, pad=False), ""]
        for subject in subjects_worst_first(report):
            lines += [*self._subject(subject, terminal), ""]
        if not report.subjects:
            lines += ["(no subjects)", ""]
        ladder = quant_ladder(report)
        if ladder is not None and terminal.verbosity >= 0:
            lines.append(fit(f"Quant ladder: {clean(ladder.sentence)}", width, pad=False))
        shown_counters = counters(report)
        if shown_counters and terminal.verbosity >= 0:
            text = ", ".join(f"{clean(k)}: {clean(v)}" for k, v in shown_counters)
            lines.append(fit(text, width, pad=False))
        lines.append(self._summary(report, terminal))
        return writable("\n".join(lines) + "\n")

    @staticmethod
    def _summary(report: RunReport, terminal: Terminal) -> str:
        verdict = report.verdict.value
        subjects = len(report.subjects)
        text = (
            f"({subjects} subject{'s' if subjects != 1 else ''}: "
            f"{counts_text(verdict_counts(all_results(report)))}; {report.coverage})"
        )
        if report.incomplete:
            text += " INCOMPLETE: the run was interrupted or a subject could not be finished"
        head = f"qgate: {verdict.upper()}"
        rest = fit(text, terminal.width - len(head) - 1, pad=False)
        return f"qgate: {terminal.style(verdict.upper(), verdict)} {rest}"

    def _subject(self, subject: SubjectReport, terminal: Terminal) -> list[str]:
        shown = [r for r in by_severity(subject.results) if r.verdict in _shown(terminal)]
        lines = [self._header(subject, terminal)]
        if terminal.verbosity < 0 and not shown:
            return lines  # quiet: a subject with nothing blocking is its header line
        if not subject.results:
            return [*lines, f"{_INDENT}(no results)"]
        if shown:
            lines += self._table(shown, terminal)
        listed = {id(r) for r in shown}
        hidden = verdict_counts(r for r in subject.results if id(r) not in listed)
        if any(hidden.values()):
            flag = "-v" if terminal.verbosity < 1 else ""
            lines.append(
                f"{_INDENT}… and {counts_text(hidden)}" + (f" ({flag} lists them)" if flag else "")
            )
        return lines

    @staticmethod
    def _header(subject: SubjectReport, terminal: Terminal) -> str:
        label, path, backend = clean(subject.label), clean(subject.path), clean(subject.backend)
        where = ", ".join(x for x in (backend, path if path != label else "") if x)
        verdict = subject.verdict.value
        counts = counts_text(verdict_counts(subject.results))
        text = fit(
            f"{label}  ({where})  {counts}" if where else f"{label}  {counts}",
            terminal.width - 8,
            pad=False,
        )
        return f"{terminal.style(fit(verdict.upper(), 6), verdict)}  {text}"

    @staticmethod
    def _table(results: list[CheckResult], terminal: Terminal) -> list[str]:
        name_w, value_w, message_w = column_widths(
            terminal.width,
            max(text_width("CHECK"), *(text_width(clean(r.name)) for r in results)),
            max(text_width("VALUE"), *(text_width(clean(value_summary(r))) for r in results)),
        )
        rows = [
            (r.verdict.value, clean(r.name), value_cell(r, value_w), clean(r.message))
            for r in results
        ]
        fitted = max(text_width("VALUE"), *(text_width(r[2]) for r in rows))
        value_w, message_w = fitted, message_w + value_w - fitted  # what the cells left over
        header = _GAP.join(
            (fit("VERDICT", _VERDICT_WIDTH), fit("CHECK", name_w), fit("VALUE", value_w), "MESSAGE")
        )
        lines = [_INDENT + header]
        for verdict, name, value, message in rows:
            messages = (
                wrap(message, message_w)
                if terminal.verbosity > 0
                else [fit(message, message_w, pad=False)]
            )
            cells = (
                terminal.style(fit(verdict.upper(), _VERDICT_WIDTH), verdict),
                fit(name, name_w),
                fit(value, value_w),
                messages[0],
            )
            lines.append((_INDENT + _GAP.join(cells)).rstrip())
            blank = " " * (len(_INDENT) + _VERDICT_WIDTH + name_w + value_w + 3 * len(_GAP))
            lines += [(blank + more).rstrip() for more in messages[1:]]
        return lines


def value_cell(result: CheckResult, width: int) -> str:
    """The value, its interval and its limit, as much of them as ``width`` columns hold whole:
    the limit goes first (the message says it again), then the interval; only a bare value
    that is still too wide is cut."""
    value = value_text(result) if result.value is not None else ""
    interval = interval_text(result.interval, result.unit) if result.interval is not None else ""
    for candidate in (value_summary(result), f"{value} {interval}".strip(), value):
        if text_width(clean(candidate)) <= width:
            return clean(candidate)
    return clean(value or value_summary(result))


def column_widths(width: int, names: int, values: int) -> tuple[int, int, int]:
    """Widths of the check, value and message columns on a line of ``width`` columns: names
    and values as wide as they need up to a cap, the message the rest; on a narrow terminal the
    value column gives way first, then the name, so the message keeps a third of the line."""
    room = width - len(_INDENT) - _VERDICT_WIDTH - 3 * len(_GAP)
    name_w, value_w = min(_NAME_MAX, names), min(_VALUE_MAX, values)
    message_min = max(_MESSAGE_MIN, room // 3)  # the message says why: keep a third for it
    excess = name_w + value_w + message_min - room
    if excess > 0:
        cut = min(excess, max(0, value_w - _NARROWEST))
        value_w, excess = value_w - cut, excess - cut
    if excess > 0:
        name_w -= min(excess, max(0, name_w - _NARROWEST))
    return name_w, value_w, max(message_min, room - name_w - value_w)


def _shown(terminal: Terminal) -> frozenset[Verdict]:
    return _SHOWN[max(-1, min(1, terminal.verbosity))]


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [ConsoleReporter()]
