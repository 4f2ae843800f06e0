"""What every built-in command shares: exit codes, containment, report options and writing."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from qgate.errors import ExitCode, InternalError, UsageError
from qgate.plugins import Registry
from qgate.results import RunReport
from qgate.runner import POLICY_ERROR, Interrupted
from qgate.terminal import Terminal


def exit_code_for(report: RunReport) -> ExitCode:
    """The exit code the results give: 0 only when :attr:`RunReport.passes`."""
    if report.incomplete:
        return ExitCode.INTERNAL_ERROR
    if any(r.details.get(POLICY_ERROR) for s in report.subjects for r in s.results):
        return ExitCode.USAGE_ERROR
    return ExitCode.OK if report.passes else ExitCode.GATE_FAILED


_Command = TypeVar("_Command", bound=Callable[..., Any])


def contained(command: _Command) -> _Command:
    """Run a built-in command so that nothing but its return value sets the exit code.

    A library or plugin that calls ``sys.exit()`` (argparse's ``--help``, click's standalone
    mode) while qgate measures or reports would otherwise end the process, possibly with 0 and
    without results. Built-in commands return their exit code instead of exiting.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (SystemExit, GeneratorExit) as exc:
            code = f"({exc.code!r})" if isinstance(exc, SystemExit) else ""
            raise InternalError(
                f"something tried to end the process ({type(exc).__name__}{code}) before qgate "
                "had written its verdict; no verdict was reached"
            ) from exc

    return run  # type: ignore[return-value]


#: a report path that means standard output (``--json -``)
STDOUT = Path("-")


def reporter_options(registry: Registry) -> list[click.Option]:
    """A ``--NAME FILE`` option for every installed reporter that writes a file; ``-`` writes
    that report to stdout instead (the console summary then goes to stderr)."""
    return [
        click.Option(
            [f"--{name}", f"{name.replace('-', '_')}_out"],
            type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
            help=f"write the {name} report here, - for stdout "
            f"({p.item.description or p.provider})".rstrip(),
        )
        for name, p in sorted(registry.reporters.items())
        if p.item.writes_file
    ]


def verbosity_option(command: _Command) -> _Command:
    """``-v``: the console lists every result with its whole message."""
    decorated: _Command = click.option(
        "--verbose",
        "-v",
        count=True,
        help="list every result in the console summary, passing ones too, with whole messages",
    )(command)
    return decorated


def verbosity_level(verbose: int, quiet: bool) -> int:
    """-1 with ``-q`` (only what blocks the gate), 0 by default, 1 with ``-v``."""
    return -1 if quiet else min(verbose, 1)


def check_outputs(outputs: dict[str, Path | None]) -> None:
    """Refuse two reports on stdout before anything is measured: they would run together."""
    dashes = sorted(name.removesuffix("_out") for name, path in outputs.items() if path == STDOUT)
    if len(dashes) > 1:
        options = ", ".join(f"--{name.replace('_', '-')} -" for name in dashes)
        raise UsageError(f"only one report can go to stdout, not {options}")


def write_reports(
    registry: Registry,
    report: RunReport,
    outputs: dict[str, Path | None],
    *,
    console: bool = True,
    verbosity: int = 0,
) -> None:
    """Write every requested report, then print the console one (on stderr when a report went
    to stdout). One reporter failing does not stop the others: their files may be all that is
    left of a long run."""
    check_outputs(outputs)
    to_stdout = STDOUT in outputs.values()
    stream = sys.stderr if to_stdout else sys.stdout
    terminal = Terminal.detect(stream, verbosity=verbosity)
    failures = []
    for name, p in sorted(registry.reporters.items()):
        path = outputs.get(f"{name.replace('-', '_')}_out")
        try:
            if p.item.writes_file and path == STDOUT:
                click.echo(p.item.render(report), nl=False)
            elif p.item.writes_file and path is not None:
                p.item.write(report, path)
            elif not p.item.writes_file and console:
                text = p.item.render_for(report, terminal)
                click.echo(text, file=stream, color=terminal.colour, nl=not text.endswith("\n"))
        except (Exception, SystemExit) as exc:  # report every failure, after trying all
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if failures:
        raise click.ClickException("could not write reports: " + "; ".join(failures))


class sigterm_as_interrupt:
    """Turn SIGTERM (a cancelled CI job) into an interrupt, so partial results get written."""

    def __enter__(self) -> None:
        def handler(signum: int, frame: object) -> NoReturn:
            raise Interrupted(f"signal {signum}")

        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            self.previous = None

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
