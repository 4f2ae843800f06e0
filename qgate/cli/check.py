"""``qgate check``: measure the models against the reference under a policy, and judge."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from qgate.cli.common import (
    contained,
    exit_code_for,
    reporter_options,
    sigterm_as_interrupt,
    write_reports,
)
from qgate.cli.run_options import run_options
from qgate.errors import ExitCode, UsageError
from qgate.plugins import Registry
from qgate.results import RunReport
from qgate.runner import Runner
from qgate.setup import RunRequest, RunSetup
from qgate.shard import parse_shard


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
    @click.option(
        "--shard",
        metavar="K/N",
        callback=_validate_shard,
        help="run only shard K of N (1-based); join the shards' JSON with qgate merge",
    )
    @click.option(
        "--run-id",
        envvar="QGATE_RUN_ID",
        default="",
        help="names the run in the results; the shards of one CI run share it, and qgate merge "
        "refuses files of different runs [default: $QGATE_RUN_ID]",
    )
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
        **outputs: Path | None,
    ) -> ExitCode:
        """Measure MODELS against the reference under a policy; exit 1 if a gate fails."""
        setup = RunSetup.build(registry, replace(request, no_cache=no_cache))
        if shard is not None:
            setup.select_shard(shard, models)
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
        _write_outputs(registry, report, outputs, attestation)
        if profile:
            click.echo(profile_text(report), err=True)
        return exit_code_for(report)

    check.params.extend(reporter_options(registry))
    return check


def _write_outputs(
    registry: Registry,
    report: RunReport,
    outputs: dict[str, Path | None],
    attestation: Path | None,
) -> None:
    """The reports and the attestation, timed as the run's ``report`` phase."""
    started = time.perf_counter()
    write_reports(registry, report, outputs)
    if attestation is not None:
        from qgate.attestation import write_attestation

        if (why := write_attestation(report, attestation)) is not None:
            click.echo(f"qgate: no attestation written: {why}", err=True)
    report.timings["report"] = time.perf_counter() - started


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
