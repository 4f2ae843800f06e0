"""``qgate check``: measure the models against the reference under a policy, and judge."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from qgate.cli.common import (
    check_outputs,
    contained,
    exit_code_for,
    reporter_options,
    sigterm_as_interrupt,
    verbosity_level,
    verbosity_option,
    write_reports,
)
from qgate.cli.run_options import run_options
from qgate.errors import ExitCode, UsageError
from qgate.plugins import Registry
from qgate.results import RunReport
from qgate.runner import Runner
from qgate.setup import RunRequest, RunSetup
from qgate.shard import parse_shard

_Command = TypeVar("_Command", bound=Callable[..., Any])


def check_command(registry: Registry) -> click.Command:
    """``qgate check``, with a ``--NAME FILE`` option per installed file reporter."""

    @click.command("check")
    @click.argument("models", nargs=-1, required=True)
    @click.option("--reference", "-r", help="the full-precision reference model")
    @click.option(
        "--reference-backend", help="backend for the reference (default: --backend, or detected)"
    )
    @run_options(
        policy_help="a shipped policy's name or a path to a policy YAML file",
        backend_help="backend for the subjects (default: detected from each file)",
    )
    @click.option("--no-cache", is_flag=True, help="neither read nor write the reference cache")
    @click.option("--profile", is_flag=True, help="print where the time went")
    @click.option(
        "--attestation",
        type=click.Path(dir_okay=False, path_type=Path),
        help="write an in-toto Statement (v1) of the verdict over the subjects' sha256 here",
    )
    @_split_options
    @verbosity_option
    @contained
    def check(
        models: tuple[str, ...],
        reference: str | None,
        reference_backend: str | None,
        request: RunRequest,
        no_cache: bool,
        profile: bool,
        attestation: Path | None,
        shard: str | None,
        run_id: str,
        list_files: bool,
        verbose: int,
        **outputs: Path | None,
    ) -> ExitCode:
        """Measure MODELS against the reference under a policy; exit 1 if a gate fails.

        Progress goes to stderr, the summary to stdout (failures first; -v lists every result,
        -q only what blocks the gate). --json - writes the results to stdout instead.
        """
        check_outputs(outputs)
        setup = RunSetup.build(registry, replace(request, no_cache=no_cache))
        if shard is not None:
            setup.select_shard(shard, models)
        if list_files:
            for path in files_read(setup, models, reference):
                click.echo(path)
            return ExitCode.OK
        runner = Runner.from_setup(
            setup, reference=reference, reference_backend=reference_backend, run_id=run_id
        )
        with sigterm_as_interrupt():
            report = runner.run(list(models))
        report.environment.update(
            {
                "command": shlex.join(["qgate", *sys.argv[1:]]),
                "policy_files": setup.policy.files,
                "plugins": {name: p.provider for name, p in registry.checks.items()},
            }
        )
        _write_outputs(
            registry, report, outputs, attestation, verbosity_level(verbose, request.quiet)
        )
        if profile:
            click.echo(profile_text(report), err=True)
        return exit_code_for(report)

    check.params.extend(reporter_options(registry))
    return check


def _split_options(command: _Command) -> _Command:
    """``--shard``, ``--run-id`` and ``--list-files``: how a run is split across CI jobs."""
    options = [
        click.option(
            "--shard",
            metavar="K/N",
            callback=_validate_shard,
            help="run only shard K of N (1-based); join the shards' JSON with qgate merge",
        ),
        click.option(
            "--run-id",
            envvar="QGATE_RUN_ID",
            default="",
            help="names the run in the results; the shards of one CI run share it, and qgate merge "
            "refuses files of different runs [default: $QGATE_RUN_ID]",
        ),
        click.option(
            "--list-files",
            is_flag=True,
            help="print the model files this run (with --shard: this shard) reads, the reference "
            "first, one per line, and exit without measuring",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _write_outputs(
    registry: Registry,
    report: RunReport,
    outputs: dict[str, Path | None],
    attestation: Path | None,
    verbosity: int,
) -> None:
    """The reports and the attestation, timed as the run's ``report`` phase."""
    started = time.perf_counter()
    write_reports(registry, report, outputs, verbosity=verbosity)
    if attestation is not None:
        from qgate.attestation import write_attestation

        if (why := write_attestation(report, attestation)) is not None:
            click.echo(f"qgate: no attestation written: {why}", err=True)
    report.timings["report"] = time.perf_counter() - started


def files_read(setup: RunSetup, models: tuple[str, ...], reference: str | None) -> list[str]:
    """The reference, then the subjects this run opens: all, or with ``--shard`` those the
    shard has units of (the split depends on file names only, so nothing is read to know it)."""
    shard = setup.shard
    subjects = [m for m in models if shard is None or shard.has_subject(m)]
    return ([reference] if reference else []) + subjects


def profile_text(report: RunReport) -> str:
    """What ``--profile`` prints: every phase's seconds, longest first, and the counters."""
    lines = ["qgate profile (seconds):"]
    for phase, seconds in sorted(report.timings.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {phase:<28} {seconds:9.2f}")
    lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(report.counters.items())))
    return "\n".join(lines)


def _validate_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_shard(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc)) from None
    return value
