"""The commands that read results files instead of measuring: ``report``, ``merge``, ``verify``."""

from __future__ import annotations

from pathlib import Path

import click

from qgate.cli.common import (
    contained,
    exit_code_for,
    reporter_options,
    verbosity_level,
    verbosity_option,
    write_reports,
)
from qgate.errors import ExitCode, UsageError
from qgate.integrity import read_results
from qgate.plugins import Registry
from qgate.progress import Progress

QUIET_HELP = "print only the results that block the gate, and the verdict"


def results_commands(registry: Registry) -> list[click.Command]:
    """``qgate report``, ``qgate merge`` and ``qgate verify``."""
    return [_report_command(registry), _merge_command(registry), _verify_command()]


def _report_command(registry: Registry) -> click.Command:
    @click.command("report")
    @click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--quiet", "-q", is_flag=True, help=QUIET_HELP)
    @verbosity_option
    @contained
    def report(results: Path, quiet: bool, verbose: int, **outputs: Path | None) -> ExitCode:
        """Re-render reports from a RESULTS.json without measuring again.

        Every verdict is recomputed from the numbers beside it; a file whose verdicts disagree
        with them (edited, or damaged) is refused with exit 2.
        """
        run_report = read_results(results)
        write_reports(registry, run_report, outputs, verbosity=verbosity_level(verbose, quiet))
        return exit_code_for(run_report)

    report.params.extend(reporter_options(registry))
    return report


def _merge_command(registry: Registry) -> click.Command:
    @click.command("merge")
    @click.argument(
        "results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
    )
    @click.option("--quiet", "-q", is_flag=True, help=QUIET_HELP)
    @verbosity_option
    @contained
    def merge(
        results: tuple[Path, ...], quiet: bool, verbose: int, **outputs: Path | None
    ) -> ExitCode:
        """Join the JSON results of shards (qgate check --shard K/N) into one report.

        Exit 1 when the merged gate fails, or when a shard is missing or incomplete (each unit
        it should have run becomes an error result); exit 2 when the files come from runs split
        a different number of ways or judged under different policies.
        """
        from qgate.merge import merge_results

        missing = [str(p) for p in results if not p.is_file()]
        if missing:
            raise UsageError(f"results file not found: {', '.join(missing)}")
        outcome = merge_results([(str(p), read_results(p)) for p in results])
        for problem in outcome.problems:
            click.echo(f"qgate: {problem}", err=True)
        write_reports(registry, outcome.report, outputs, verbosity=verbosity_level(verbose, quiet))
        return exit_code_for(outcome.report)

    merge.params.extend(reporter_options(registry))
    return merge


def _verify_command() -> click.Command:
    @click.command("verify")
    @click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "--models",
        type=click.Path(file_okay=False, path_type=Path),
        help="look the models up by file name under this directory instead of their recorded paths",
    )
    @click.option("--quiet", "-q", is_flag=True, help="no progress output on stderr")
    @contained
    def verify(results: Path, models: Path | None, quiet: bool) -> ExitCode:
        """Re-hash the model files RESULTS.json names and compare them with its digests.

        Exit 0 when every file matches, 1 on any MISMATCH, missing or extra file, 2 when the
        results file cannot be read. The digest cache is never used: every byte is read again.
        """
        from qgate import verify as verification

        checks = verification.verify(
            results, models_dir=models, progress=Progress(enabled=not quiet)
        )
        for item in checks:
            click.echo(item.line())
        click.echo(verification.summary(checks))
        return verification.exit_code(checks)

    return verify
