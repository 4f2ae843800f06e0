"""The models a subject is weighed against: the claimed source first, then the not_from models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from qgate.backend import Backend, ModelInfo
from qgate.check import CheckContext
from qgate.errors import CheckError, QgateError
from qgate_checks.identity.options import IdentityOptions

if TYPE_CHECKING:
    from qgate.handle import ModelHandle

Role = Literal["claim", "not_from"]


@dataclass
class Candidate:
    """The claimed source or a not_from model."""

    role: Role
    path: Path
    info: ModelInfo
    #: the backend that opened it: its tensors and, for behaviour, the model come from it
    backend: Backend
    #: the run's reference handle when the candidate is the reference (loaded at most once)
    handle: ModelHandle | None = None

    @property
    def label(self) -> str:
        return f"{self.role}: {self.info.label or self.path.name}"


def find_candidates(ctx: CheckContext, options: IdentityOptions) -> list[Candidate] | None:
    """The claim first, then the not_from models; None when there is no claim at all."""
    reference = ctx.reference
    out: list[Candidate] = []
    if options.claimed_source is None:
        if reference is None:
            return None
        out.append(_reference_as(reference, "claim"))
    else:
        out.append(_open_candidate(ctx, "claim", Path(options.claimed_source)))
    for raw in options.not_from:
        out.append(_open_candidate(ctx, "not_from", Path(raw)))
    seen: dict[Path, str] = {}
    for cand in out:
        key = resolved(cand.path)
        if key in seen:
            raise CheckError(f"{cand.path} is given twice (as {seen[key]} and as {cand.role})")
        seen[key] = cand.role
    return out


def _reference_as(reference: ModelHandle, role: Role) -> Candidate:
    return Candidate(role, reference.path, reference.info, reference.backend, reference)


def _open_candidate(ctx: CheckContext, role: Role, path: Path) -> Candidate:
    reference = ctx.reference
    if reference is not None and resolved(path) == resolved(reference.path):
        return _reference_as(reference, role)
    if not path.exists():
        raise CheckError(f"the {role} model {path} does not exist")
    backend = ctx.subject.backend
    if not backend.detect(path):
        raise CheckError(
            f"the {role} model {path} is not a {backend.name} model like the subject; "
            "identity compares models of the subject's format"
        )
    try:
        info = backend.inspect(path)
    except QgateError as exc:
        raise CheckError(f"cannot read the {role} model: {exc}") from None
    if not info.label:
        info.label = path.name
    return Candidate(role, path, info, backend)


def resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
