"""JSON files of a model folder, read defensively: a folder may come from anyone."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from qgate.errors import BackendError

_SURROGATE = re.compile("[\ud800-\udfff]")


def load_json(file: Path) -> Any:
    """A JSON file of a model folder, or a :class:`BackendError` naming it.

    Python's ``json`` raises more than ``JSONDecodeError`` on hostile input: ``ValueError``
    for an integer of thousands of digits, ``RecursionError`` for deep nesting. A ``"\\ud800"``
    escape decodes to a lone surrogate that no UTF-8 writer accepts, so every such character
    becomes U+FFFD here, before a label or template carries it into reports and caches.
    """
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BackendError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BackendError(f"{file}: not valid JSON: {exc}") from None
    return replace_surrogates(data)


def replace_surrogates(data: Any) -> Any:
    """``data`` with every lone surrogate in its strings (keys too) replaced by U+FFFD.

    Iterative, not recursive: ``json`` parses deeper nesting than Python's recursion limit.
    Containers are changed in place; the (possibly new) top-level value is returned.
    """
    if isinstance(data, str):
        return _SURROGATE.sub("\ufffd", data)
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in [k for k in item if isinstance(k, str) and _SURROGATE.search(k)]:
                item[_SURROGATE.sub("\ufffd", key)] = item.pop(key)
            pairs: Any = item.items()
        elif isinstance(item, list):
            pairs = enumerate(item)
        else:
            continue
        for key, value in list(pairs):
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    item[key] = _SURROGATE.sub("\ufffd", value)
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return data


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    names = {str: "string", bool: "boolean", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON spells it, cut: a hostile value may be megabytes long (or 4,000
    digits)."""
    if isinstance(value, int) and value.bit_length() > 192:
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # nested deeper than json.dumps goes
        return f"a deeply nested {json_type(value)}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
