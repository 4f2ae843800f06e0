"""Weight evidence, the strongest kind: every tensor of the subject and of each candidate,
dequantized by its backend's :class:`~qgate.backend.TensorReader` at the same sampled rows, and
compared (relative error ``||s - c|| / ||c||`` and cosine similarity).

A quant sits far closer to the tensors it was made from than to a fine-tune's or a base's.
Tensors where the claim and a not_from model are the same (a LoRA leaves most tensors untouched)
prove nothing and are left out of the vote. Nothing here knows a file format: a backend whose
``tensor_reader`` returns None leaves the weights undecided, with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qgate.backend import Backend, TensorReader
from qgate.errors import CheckError, QgateError
from qgate.tensors import TensorComparison, compare_tensors
from qgate_checks.identity.metadata import Shapes, tensor_shapes


@dataclass
class TensorSources:
    """The tensor readers of the compared models, opened once for both the metadata (their
    tensor shapes) and the weight comparison."""

    readers: list[TensorReader | None]  #: None: the backend hands out no tensors, or failed
    formats: list[str]
    #: the first file whose tensors could not be opened, and why ("" when every one opened)
    failure: str = ""

    def shapes(self) -> list[Shapes | None]:
        return [tensor_shapes(r.tensors) if r is not None else None for r in self.readers]

    def unavailable(self, who: str) -> str:
        """Why the weights of these files cannot be compared, "" when they can; ``who`` names
        the files in the reason (``the subject and candidates``)."""
        listed = ", ".join(sorted(set(self.formats)))
        if len(set(self.formats)) > 1:
            # each format names and lays out its tensors in its own way
            return f"needs files of one format ({who} are {listed})"
        if not self.failure and any(r is None for r in self.readers):
            return (
                "needs GGUF files or another format whose backend hands out tensors "
                f"({who} are {listed})"
            )
        return ""

    def opened(self) -> list[TensorReader]:
        """Every reader, for a comparison that :meth:`unavailable` allows.

        :raises CheckError: naming the file whose tensors could not be opened.
        """
        if self.failure:
            raise CheckError(f"weight comparison: {self.failure}")
        return [r for r in self.readers if r is not None]


@contextmanager
def tensor_sources(models: Sequence[tuple[Backend, Path, str]]) -> Iterator[TensorSources]:
    """Open the tensors of each ``(backend, path, format)``, closing them all on exit. A file
    that fails to open gets no reader (its metadata then lacks tensor shapes); its error is
    raised only if the weights are compared."""
    with ExitStack() as stack:
        readers: list[TensorReader | None] = []
        failure = ""
        for backend, path, _ in models:
            try:
                reader = backend.tensor_reader(path)
            except (QgateError, OSError) as exc:
                reader, failure = None, failure or str(exc)
            if reader is not None:
                stack.enter_context(reader)
            readers.append(reader)
        yield TensorSources(readers, [fmt for _, _, fmt in models], failure)


def compare_weights(
    readers: Sequence[TensorReader],
    paths: Sequence[Path],
    max_elements: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TensorComparison]:
    """:func:`qgate.tensors.compare_tensors` (``paths`` name the files in its errors), its
    errors as :class:`CheckError`."""
    try:
        return compare_tensors(readers, paths, max_elements=max_elements, progress=progress)
    except QgateError as exc:
        raise CheckError(f"weight comparison: {exc}") from None


@dataclass
class WeightEvidence:
    """Tensors of the subject (file 0) compared with each candidate (file k >= 1)."""

    tensors: list[TensorComparison]
    seconds: float
    min_cosine: float
    shared_tolerance: float

    def rel(self, k: int) -> np.ndarray:
        return np.array([t.rel_error(0, k) for t in self.tensors])

    def cos(self, k: int) -> np.ndarray:
        return np.array([t.cosine(0, k) for t in self.tensors])

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def matrices(self) -> np.ndarray:
        """Mask of the weight matrices (two or more dimensions). Norm and bias vectors stay out
        of the match vote and the summaries: every quant copies them unquantized, and a positive
        scale vector has a high cosine to almost any other. (They do vote on which candidate is
        closer: a quant of the base carries the base's norms exactly.) A tensor with no values
        (a zero dimension) is in neither: comparing nothing gives cosine 1, no evidence at all."""
        filled = np.array([t.elements > 0 for t in self.tensors], dtype=bool)
        mask = np.array([math.prod(t.shape[1:]) > 1 for t in self.tensors], dtype=bool) & filled
        return mask if mask.any() else filled

    def match_share(self) -> float:
        """Share of the weight matrices with cosine >= ``min_cosine`` to the claim."""
        if not self.matrices.any():
            return math.nan
        return float(np.mean(self.cos(1)[self.matrices] >= self.min_cosine))

    def telling(self, k: int) -> np.ndarray:
        """Tensors where the claim (file 1) and candidate ``k`` really differ."""
        return np.array(
            [t.rel_error(1, k) > self.shared_tolerance for t in self.tensors], dtype=bool
        )

    def closer(self, k: int) -> tuple[float | None, float | None, int]:
        """(share of telling tensors closer to the claim than to candidate ``k``, median error
        ratio claim/k over them, number of telling tensors)."""
        mask = self.telling(k)
        if not mask.any():
            return None, None, 0
        to_claim, to_other = self.rel(1)[mask], self.rel(k)[mask]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(to_other > 0, to_claim / to_other, np.inf)
        return float(np.mean(to_claim < to_other)), float(np.median(ratio)), int(mask.sum())
