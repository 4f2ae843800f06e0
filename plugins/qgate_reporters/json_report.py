"""The ``json`` reporter: the whole run as JSON, which ``qgate report`` and ``qgate merge`` read."""

from __future__ import annotations

import json
import math
from typing import Any

from qgate.hookspecs import hookimpl
from qgate.reporter import Reporter
from qgate.results import RunReport
from qgate_reporters._common import writes_any_text


def finite_json(obj: Any) -> Any:
    """``obj`` with any non-finite float left in it written as ``"nan"``/``"inf"``/``"-inf"``,
    the convention ``to_dict`` uses for values (an interval or a timing can still hold one)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


class JsonReporter(Reporter):
    """``RunReport.to_dict()`` as strict JSON: no NaN or Infinity tokens, which many JSON
    readers refuse."""

    name = "json"
    description = "the full results as JSON (re-renderable with qgate report)"
    writes_file = True

    @writes_any_text
    def render(self, report: RunReport) -> str:
        data = finite_json(report.to_dict())
        return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [JsonReporter()]
