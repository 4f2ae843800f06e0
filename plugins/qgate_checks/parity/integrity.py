"""``tensor-integrity``: every stored tensor of the subject is whole and finite.

Published quants have shipped with 61,440 NaN block scales in one tensor (ik_llama.cpp issues
649 and 727) and with expert tensors 2 MiB short, loaded silently (ik_llama.cpp issue 2437). A
NaN in a tensor that the evaluation text never routes through (an expert, a rare token's
embedding row) passes every likelihood check. One streaming pass over the subject's tensors
(:meth:`~qgate.backend.Backend.scan_tensors`: the GGUF backend reads block scales, not values)
finds NaN and infinite numbers, all-zero weights and tensors stored short, and names them. With
a reference of the same format, the tensor names and shapes must be the reference's, and an
all-zero tensor is a fault only where the reference's is not all zero too.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgate.backend import TensorHealth, TensorMeta
from qgate.check import Check, CheckContext
from qgate.errors import QgateError
from qgate.figures import Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison


@dataclass
class TensorIntegrityOptions:
    compare_shapes: bool = option(
        True, "with a reference of the same format: tensor names and shapes must be its own"
    )
    listed: int = option(5, "faulty tensors named in the message (the table lists all)", minimum=1)


@dataclass(frozen=True)
class Fault:
    tensor: str
    what: str


class TensorIntegrityCheck(Check[TensorIntegrityOptions]):
    name = "tensor-integrity"
    description = "NaN/Inf (block scales too), all-zero and short tensors; shapes vs the reference"
    Options = TensorIntegrityOptions

    def run(self, ctx: CheckContext[TensorIntegrityOptions]) -> list[CheckResult]:
        subject = ctx.subject
        scan = subject.backend.scan_tensors(subject.path)
        if scan is None:
            return [
                ctx.skip(
                    f"the {subject.backend.name} backend cannot hand out {subject.info.label}'s "
                    "tensors: nothing was checked",
                    "faulty_tensors",
                )
            ]
        total = subject.info.extra.get("tensor_count") or len(subject.info.tensor_type_by_name)
        healths = []
        for health in scan:
            healths.append(health)
            done = len(healths)
            ctx.update(f"reading {subject.info.label}'s tensors", done, max(total, done), "tensors")
        reference_tensors = _reference_tensors(ctx)
        faults = [f for h in healths for f in _faults(h)]
        faults = [f for f in faults if not _zero_in_reference(ctx, f, reference_tensors)]
        if ctx.options.compare_shapes and reference_tensors is not None:
            faults += shape_faults(healths, reference_tensors)
        scanned = sum(h.values for h in healths)
        if faults:
            named = "; ".join(f"{f.tensor}: {f.what}" for f in faults[: ctx.options.listed])
            more = len(faults) - ctx.options.listed
            count = "1 faulty tensor" if len(faults) == 1 else f"{len(faults)} faulty tensors"
            message = f"{count}: {named}" + (f"; and {more} more" if more > 0 else "")
        else:
            message = (
                f"all {len(healths)} tensors whole and finite ({scanned:,} stored numbers read)"
            )
        return [
            ctx.result(
                "faulty_tensors",
                len(faults),
                threshold=0,
                comparison=Comparison.LE,
                message=message,
                tables=[_table(faults)] if faults else None,
                details={"tensors": len(healths), "numbers_read": scanned},
            )
        ]


def _faults(health: TensorHealth) -> list[Fault]:
    found = []
    if health.problem:
        found.append(Fault(health.name, f"stored short: {health.problem}"))
    if health.non_finite:
        what = "block scales" if health.type_name.startswith(("Q", "IQ", "TQ")) else "values"
        found.append(
            Fault(health.name, f"{health.non_finite:,} NaN or infinite {what} ({health.type_name})")
        )
    if health.all_zero:
        found.append(Fault(health.name, f"all zero ({health.type_name} {list(health.shape)})"))
    return found


def _reference_tensors(ctx: CheckContext[TensorIntegrityOptions]) -> dict[str, TensorMeta] | None:
    """The reference's tensors by name, when it is of the subject's format (names and layouts
    of different formats do not compare); None otherwise."""
    reference = ctx.reference
    if reference is None or reference.info.format != ctx.subject.info.format:
        return None
    try:
        reader = reference.backend.tensor_reader(reference.path)
    except (QgateError, OSError):
        return None
    if reader is None:
        return None
    with reader:
        return {t.name: t for t in reader.tensors}


def _zero_in_reference(
    ctx: CheckContext[TensorIntegrityOptions],
    fault: Fault,
    tensors: dict[str, TensorMeta] | None,
) -> bool:
    """Whether an all-zero fault is the reference's own (a zero bias the model was trained with)."""
    if not fault.what.startswith("all zero") or tensors is None or fault.tensor not in tensors:
        return False
    assert ctx.reference is not None
    reader = ctx.reference.backend.tensor_reader(ctx.reference.path)
    if reader is None:
        return False
    with reader:
        return reader.health(fault.tensor).all_zero


def shape_faults(healths: list[TensorHealth], reference: dict[str, TensorMeta]) -> list[Fault]:
    """Tensors the reference has that the subject lacks, or has in another shape."""
    ours = {h.name: h for h in healths}
    found = []
    for name, meta in reference.items():
        if name not in ours:
            found.append(Fault(name, "missing: the reference has it"))
        elif tuple(ours[name].shape) != tuple(meta.shape):
            found.append(
                Fault(
                    name,
                    f"shape {list(ours[name].shape)}, the reference's is {list(meta.shape)}",
                )
            )
    return found


def _table(faults: list[Fault]) -> Table:
    return Table("Faulty tensors", ["tensor", "fault"], [[f.tensor, f.what] for f in faults])


@hookimpl
def qgate_checks() -> list[Check]:
    return [TensorIntegrityCheck()]
