"""Text from untrusted places (model files, results files, plugins), made safe to show or write.

Labels, paths, messages and metadata come from artifacts under review. Two things can go wrong:
a string that no UTF-8 writer accepts (a lone surrogate from a ``"\\ud800"`` JSON escape) makes
a report or a log line fail to be written at all, and a string with terminal escapes or line
breaks can drive a terminal or forge a log line.
"""

from __future__ import annotations

import re

#: terminal escape sequences: CSI (``ESC [`` or the one-byte ``\x9b``, parameters, a final
#: byte), OSC/DCS/APC/PM/SOS strings up to BEL or ST (a window title, a hyperlink), and the
#: two-character escapes (``ESC c`` resets the terminal)
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[\x20-\x3f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?"
)
#: what is left of control characters after the escapes: C0 and C1 controls, DEL, the bidi
#: controls that reorder what a reader sees, and lone surrogates (no UTF-8 stream takes them)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_WHITESPACE = re.compile("[\t\n\r\v\f]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def printable(text: object) -> str:
    """``text`` safe to print on one line of a terminal or a CI log.

    Labels, paths and messages come from model files and results files: a model named
    ``"\\x1b[2J..."`` must not clear the screen, and a newline must not forge a log line.
    Escape sequences are removed whole, line breaks and tabs become spaces, other control
    characters are dropped and lone surrogates become U+FFFD.
    """
    cleaned = _WHITESPACE.sub(" ", _ESCAPES.sub("", str(text)))
    return _CONTROLS.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else "", cleaned)


def writable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so any UTF-8 writer takes it.

    A ``"\\ud800"`` escape in a model's JSON config, a results file or a plugin's message is a
    valid Python string that no UTF-8 writer accepts: one such character in a label made the
    report's ``write_text`` (and ``click.echo``) raise, so no report was written at all.
    """
    return _SURROGATES.sub("\ufffd", text)
