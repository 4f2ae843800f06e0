"""``qgate baseline``: score the reference once into the reference cache (:mod:`qgate.baseline`)."""

from __future__ import annotations

import click

from qgate.cli.common import contained, sigterm_as_interrupt
from qgate.cli.run_options import run_options
from qgate.plugins import Registry
from qgate.setup import RunRequest, RunSetup


def baseline_command(registry: Registry) -> click.Command:
    @click.command("baseline")
    @click.argument("reference")
    @run_options(
        policy_help="the policy whose datasets and scoring settings the checks will use",
        backend_help="backend for the reference (default: detected)",
    )
    @contained
    def baseline(reference: str, request: RunRequest) -> None:
        """Score REFERENCE once and store its outputs in the reference cache.

        Later qgate check runs with the same policy and options (on other CI runners too, once
        the cache directory is restored there) read the reference from the cache and never load
        it. Use the same --n-ctx, --kv-cache and --dataset as the checks.
        """
        from qgate.baseline import compute_baseline

        setup = RunSetup.build(registry, request)
        with sigterm_as_interrupt():
            outcome = compute_baseline(setup, reference)
        for line in outcome.lines():
            click.echo(line)

    return baseline
