"""``when:`` conditions: run a check only on the subjects it is meant for.

Each key names a metadata field (see ``ModelInfo.condition_fields``); the value is either
a scalar (equality), a list (any of), or a comparison string such as ``"< 4.5"`` or ``">= 8192"``.
All keys must hold. A field the subject does not report (``null``) fails every comparison.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from qgate.errors import PolicyError
from qgate.options import suggest

CONDITION_FIELDS = (
    "format",
    "architecture",
    "bits_per_weight",
    "expert_count",
    "parameter_count",
    "context_length",
    "file_type",
    "n_ctx",
)

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_COMPARISON = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_OPERATOR_START = "<>=!"


def _parse_comparison(text: str) -> tuple[str, float] | None:
    """``"< 4.5"`` -> ``("<", 4.5)``; None when ``text`` is not a well-formed comparison."""
    m = _COMPARISON.match(text)
    if not m:
        return None
    try:
        number = float(m.group(2))
    except ValueError:
        return None
    return (m.group(1), number) if number == number else None  # NaN compares false to everything


def validate_condition(when: Mapping[str, Any], *, source: str | None, path: str) -> None:
    """Raise :class:`PolicyError` for an unknown field or a malformed comparison."""
    for key, expected in when.items():
        if key not in CONDITION_FIELDS:
            raise PolicyError(
                f"unknown condition field {key!r}{suggest(key, CONDITION_FIELDS)}; "
                f"known fields: {', '.join(CONDITION_FIELDS)}",
                source=source,
                key_path=f"{path}.{key}",
            )
        for index, item in enumerate(expected if isinstance(expected, list) else [expected]):
            where = f"{path}.{key}" + (f"[{index}]" if isinstance(expected, list) else "")
            if isinstance(item, (list, dict)):
                raise PolicyError(
                    "expected a value, a list of values or a comparison string",
                    source=source,
                    key_path=where,
                )
            text = item.strip() if isinstance(item, str) else ""
            if text[:1] and text[0] in _OPERATOR_START and _parse_comparison(text) is None:
                raise PolicyError(
                    f"malformed comparison {item!r}; write e.g. '< 4.5' or '>= 8192'",
                    source=source,
                    key_path=where,
                )


def matches(when: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether a subject with metadata ``fields`` satisfies every condition in ``when``."""
    return all(_holds(expected, fields.get(key)) for key, expected in when.items())


def _holds(expected: Any, actual: Any) -> bool:
    if isinstance(expected, list):
        return any(_holds(e, actual) for e in expected)
    if isinstance(expected, str):
        comparison = (
            _parse_comparison(expected) if expected.strip()[:1] in tuple(_OPERATOR_START) else None
        )
        if comparison is not None:
            if actual is None or isinstance(actual, (str, bool)):
                return False
            op, number = comparison
            return _OPS[op](float(actual), number)
        return actual is not None and str(actual).lower() == expected.lower()
    return bool(actual == expected)
