"""What the report shows for the whole sweep: curves by position, a table per bucket, and pass-key
retrieval by depth, for every KV cache type together."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qgate.figures import Chart, Line, Table
from qgate.results import CheckResult, Interval
from qgate_checks.long_context.measure import Measured
from qgate_checks.long_context.statistics import Bucket

Row = list[str | int | float | None]
#: pass keys are shown by depth band: 0-20 %, 20-40 %, ...
DEPTH_BANDS = 5


@dataclass
class Sweep:
    """Every KV cache type's figures, gathered for the report."""

    kld: list[Line] = field(default_factory=list)
    ppl: list[Line] = field(default_factory=list)
    reference_ppl: Line | None = None
    buckets: list[Row] = field(default_factory=list)
    passkeys: list[Row] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)

    def record(self, kv: str, per_bucket: list[Bucket], data: Measured) -> None:
        """Add one KV cache type's curves and rows."""
        x: list[float | str] = [b.mid for b in per_bucket]
        self.kld.append(Line(f"KV {kv}", x, [b.kld for b in per_bucket]))
        self.ppl.append(Line(f"KV {kv}", x, [b.ppl_subject for b in per_bucket]))
        if self.reference_ppl is None:
            self.reference_ppl = Line("reference (f16)", x, [b.ppl_reference for b in per_bucket])
        self.sequences[kv] = data.sequences
        self.buckets += [
            [
                kv,
                b.label,
                len(b.rows),
                f"{b.kld:.5f} {_interval(b.kld_interval)}",
                f"{b.p99:.4f} {_interval(b.p99_interval)}",
                round(b.ppl_reference, 3),
                round(b.ppl_subject, 3),
                f"{b.ppl_delta * 100:+.2f}% {_interval(b.ppl_delta_interval, percent=True)}",
            ]
            for b in per_bucket
        ]
        self.passkeys += passkey_rows(kv, data)

    def attach(self, result: CheckResult, edges: list[int], confidence: float) -> None:
        """Put the sweep's charts and tables on ``result`` (the check's first)."""
        ppl = [*self.ppl, *([self.reference_ppl] if self.reference_ppl else [])]
        result.figures.charts += [
            Chart("KL divergence by position", "position (tokens)", "mean KLD (nats)", self.kld),
            Chart("Perplexity by position", "position (tokens)", "PPL", ppl),
        ]
        level = f"{confidence * 100:.3g}% intervals, per bucket Bonferroni-split"
        columns = ["KV cache", "bucket", "positions", "mean KLD", "p99 KLD"]
        columns += ["PPL reference", "PPL subject", "PPL delta"]
        result.figures.tables.append(Table(f"Per bucket ({level})", columns, self.buckets))
        if self.passkeys:
            columns = ["KV cache", "depth", "reference retrieves", "subject keeps"]
            result.figures.tables.append(
                Table("Pass-key retrieval by depth", columns, self.passkeys)
            )
        result.details.update({"context": edges[-1], "sequences": dict(self.sequences)})


def passkey_rows(kv: str, data: Measured) -> list[Row]:
    """Per depth band: how many keys the reference retrieves, and how many of those the subject
    keeps."""
    rows: list[Row] = []
    band = np.minimum((data.depths * DEPTH_BANDS).astype(int), DEPTH_BANDS - 1)
    for b in range(DEPTH_BANDS):
        inside = band == b
        if not inside.any():
            continue
        found = data.ref_hits & inside
        kept = int((found & data.sub_hits).sum())
        label = f"{b * 100 // DEPTH_BANDS}-{(b + 1) * 100 // DEPTH_BANDS}%"
        rows.append(
            [kv, label, f"{int(found.sum())}/{int(inside.sum())}", f"{kept}/{int(found.sum())}"]
        )
    return rows


def _interval(interval: Interval | None, *, percent: bool = False) -> str:
    if interval is None:
        return ""
    if percent:
        return f"[{interval.low * 100:+.2f}, {interval.high * 100:+.2f}]"
    return f"[{interval.low:.4g}, {interval.high:.4g}]"
