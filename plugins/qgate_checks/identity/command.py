"""``qgate identity MODEL OTHER [--json]``: the identity check's evidence between two files,
loading neither model. ``qgate inspect MODEL --identity OTHER`` is an alias of it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qgate.detection import resolve_backend
from qgate.plugins import Registry
from qgate_checks.identity.pairwise import format_pairwise, pairwise_evidence
from qgate_checks.identity.weights import tensor_sources


@click.command("identity")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("other", type=click.Path(path_type=Path))
@click.option("--backend", "-b", help="backend for both files (default: detected)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def identity_command(model: Path, other: Path, backend: str | None, as_json: bool) -> None:
    """Compare MODEL with OTHER without loading either: metadata side by side and, where their
    backend hands out tensors (GGUF), every tensor dequantized and compared (relative error,
    cosine) at sampled rows. The identity check's evidence, for one pair of files."""
    # a plugin's command gets no registry from the CLI: the installed plugins are the
    # environment's, as for the qgate command that runs it
    registry = Registry.from_environment()
    paths = (model, other)
    backends = [resolve_backend(registry, path, backend) for path in paths]
    infos = [chosen.inspect(path) for chosen, path in zip(backends, paths, strict=True)]
    models = [(b, p, i.format) for b, p, i in zip(backends, paths, infos, strict=True)]
    with tensor_sources(models) as sources:
        evidence = pairwise_evidence(infos[0], infos[1], sources)
    click.echo(
        json.dumps(evidence, indent=2, default=str) if as_json else format_pairwise(evidence)
    )
