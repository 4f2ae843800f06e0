"""Plain data shown to a person as YAML-like text: ``key: value`` lines, nested by indentation.

``qgate inspect`` and ``qgate plugins`` print what backends and plugins return, and a model's
metadata is untrusted: every string is made printable first (no escape sequences, control or
bidirectional characters), tuples and numpy values become plain lists and numbers, and nothing
is shown as a Python repr.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from qgate.text import printable


def plain(value: Any) -> Any:
    """``value`` as JSON-like data (dicts, lists, str, numbers, bools, None), strings printable."""
    data = json.loads(json.dumps(value, default=_fallback, allow_nan=True))
    return _printable(data)


def as_yaml(value: Any) -> str:
    """``value`` as block-style YAML text, keys in their order, unicode kept."""
    text: str = yaml.safe_dump(
        plain(value), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return text.rstrip("\n")


def _fallback(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # a numpy array
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _printable(data: Any) -> Any:
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, list):
        return [_printable(v) for v in data]
    if isinstance(data, dict):
        return {printable(k): _printable(v) for k, v in data.items()}
    return data
