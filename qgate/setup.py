"""What one run measures with, built once from the command line: :class:`RunSetup`.

``qgate check`` and ``qgate baseline`` must agree exactly on the policy, the backend options after
command-line overrides, the evaluation text and the reference cache: the cache entries a baseline
writes are found only by a check that asks with the same inputs. So both commands build one
:class:`RunSetup` from the same :class:`RunRequest` (the options they share) and differ only in
what they do with it: ``check`` runs it (``Runner.from_setup``), ``baseline`` scores the reference
with it (:mod:`qgate.baseline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from qgate.backend import Backend, BackendOptions
from qgate.cache import ReferenceCache, default_cache_dir
from qgate.datasets import Dataset, dataset_from_path, load_dataset
from qgate.detection import resolve_backend
from qgate.handle import ModelHandle
from qgate.hashing import DigestIndex
from qgate.instruments import Instruments
from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.policy.model import Policy
from qgate.progress import Progress
from qgate.shard import ShardSelection, select_shard


@dataclass(frozen=True)
class RunRequest:
    """What the command line asks of a run: the options ``check`` and ``baseline`` share."""

    policy: str = "production"  #: a shipped policy's name or a policy file
    datasets: tuple[str, ...] = ()  #: ``--dataset [DOMAIN=]FILE`` arguments
    backend: str | None = None  #: ``--backend``: None to detect it from each file
    n_ctx: int | None = None  #: the overrides of the policy's backend options (None: keep)
    threads: int | None = None
    gpu_layers: int | None = None
    kv_cache: str | None = None
    cache_dir: Path | None = None  #: None for ``$QGATE_CACHE_DIR`` or ``~/.cache/qgate``
    no_cache: bool = False  #: neither read nor write the reference cache
    quiet: bool = False  #: no progress on stderr


@dataclass
class RunSetup:
    """A run's inputs, resolved and loaded: everything but the models themselves."""

    registry: Registry
    request: RunRequest
    policy: Policy
    #: the policy's backend options with the command line's overrides applied
    options: BackendOptions
    #: the policy's datasets, then the ``--dataset`` files, loaded
    datasets: list[Dataset]
    cache: ReferenceCache
    instruments: Instruments
    #: with ``--shard K/N``: the units this shard runs (:meth:`select_shard`)
    shard: ShardSelection | None = None
    #: each model file hashed once per run, whoever asks
    digests: DigestIndex = field(init=False)

    def __post_init__(self) -> None:
        self.digests = DigestIndex(self.cache.directory)

    @classmethod
    def build(cls, registry: Registry, request: RunRequest) -> RunSetup:
        """Resolve the policy and load the datasets; a bad policy or dataset is a usage error
        here, before any model is opened."""
        policy = load_policy(
            request.policy, registry.check_objects(), extra_dirs=registry.policy_dirs
        )
        options = with_backend_overrides(
            policy.backend,
            n_ctx=request.n_ctx,
            threads=request.threads,
            gpu_layers=request.gpu_layers,
            kv_cache=request.kv_cache,
        )
        extra = [dataset_from_path(d) for d in request.datasets]
        datasets = [load_dataset(d) for d in [*policy.datasets, *extra]]
        directory = None if request.no_cache else (request.cache_dir or default_cache_dir())
        return cls(
            registry,
            request,
            policy,
            options,
            datasets,
            ReferenceCache(directory),
            Instruments(progress=Progress(enabled=not request.quiet)),
        )

    def select_shard(self, text: str, subjects: Sequence[str]) -> None:
        """Run only shard ``text`` (``K/N``) of the units of ``subjects`` under the policy."""
        self.shard = select_shard(
            text,
            list(subjects),
            self.policy,
            self.registry.check_objects(),
            options=self.options,
            datasets=self.datasets,
        )

    def backend_for(self, path: Path, name: str | None) -> Backend:
        """The backend named ``name``, or the one surest of ``path`` (as the runner picks)."""
        return resolve_backend(self.registry, path, name)

    def handle(self, path: Path, backend: Backend) -> ModelHandle:
        """``path`` opened for this run: inspected now, loaded when first needed."""
        return ModelHandle(
            path,
            backend,
            self.options,
            digests=self.digests,
            instruments=self.instruments,
        )


def with_backend_overrides(options: BackendOptions, **overrides: object) -> BackendOptions:
    """A copy of ``options`` with the non-None ``overrides`` applied (CLI flags over the policy)."""
    return replace(options, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
