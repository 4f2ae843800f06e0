"""Text from the results, made harmless in Markdown that GitHub renders.

What the results say (a model's label and metadata, a check's message, the policy's name) is
shown in the step summary and the pull-request comment, where GitHub would turn ``@name`` into a
notification, a URL into a link and ``#12`` into an issue reference. Here it stays readable text.
"""

from __future__ import annotations

import html
import re
from typing import Any

from qgate.results import RunReport

#: bidirectional controls: they display text in another order than it is stored (Trojan Source)
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: a zero-width space: breaks what GitHub would turn into a mention or a link, invisibly
_ZWSP = "\u200b"
#: what GitHub links or notifies from plain text: ``www.`` autolinks, issue references
_WWW = re.compile(r"(?i)\b(www)\.")
_ISSUE = re.compile(r"(?i)(#|\bgh-)(?=\d)")
#: Markdown punctuation escaped with a backslash (``<``, ``>``, ``&`` become entities instead)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")


def neutralise(text: str) -> str:
    """``text`` that cannot mention anyone (``@name``, an e-mail autolink), autolink a URL
    (``https://``, ``www.``), reference an issue (``#12``), or reverse the text around it.

    For text that came from the results (a model's label and metadata, a check's message): GitHub
    notifies whoever a comment mentions and links whatever looks like a URL, so a model named
    ``@org/team`` would page a team. A zero-width space keeps the text readable; the Markdown
    syntax itself (links, images, HTML) is escaped by the reporter or :func:`md_text`.
    """
    text = _BIDI.sub("", text)
    text = text.replace("@", "@" + _ZWSP).replace("://", ":" + _ZWSP + "//")
    text = _WWW.sub(lambda m: m.group(1) + _ZWSP + ".", text)
    return _ISSUE.sub(lambda m: m.group(1) + _ZWSP, text)


def neutralise_report(report: RunReport) -> RunReport:
    """A copy of ``report`` with every string neutralised, for display only (verdicts and
    numbers are untouched; the copy is never written)."""
    return RunReport.from_dict(_neutralise_data(report.to_dict()))


def _neutralise_data(data: Any) -> Any:
    if isinstance(data, str):
        return neutralise(data)
    if isinstance(data, dict):
        return {
            neutralise(k) if isinstance(k, str) else k: _neutralise_data(v) for k, v in data.items()
        }
    if isinstance(data, list):
        return [_neutralise_data(v) for v in data]
    return data


def md_text(value: object) -> str:
    """Untrusted ``value`` as one line of Markdown text: neutralised, punctuation escaped."""
    one_line = " ".join(str(value).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", neutralise(one_line)), quote=False)
