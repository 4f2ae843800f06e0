"""What every built-in command shares: exit codes, containment, report options and writing."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from qgate.errors import ExitCode, InternalError
from qgate.plugins import Registry
from qgate.results import RunReport
from qgate.runner import Interrupted


def exit_code_for(report: RunReport) -> ExitCode:
    """The exit code the results give: 0 only when :attr:`RunReport.passes`."""
    if report.incomplete:
        return ExitCode.INTERNAL_ERROR
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


def reporter_options(registry: Registry) -> list[click.Option]:
    """A ``--NAME FILE`` option for every installed reporter that writes a file."""
    return [
        click.Option(
            [f"--{name}", f"{name.replace('-', '_')}_out"],
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"write the {name} report here ({p.item.description or p.provider})".rstrip(),
        )
        for name, p in sorted(registry.reporters.items())
        if p.item.writes_file
    ]


def write_reports(
    registry: Registry, report: RunReport, outputs: dict[str, Path | None], *, console: bool = True
) -> None:
    """Write every requested report, then print the console one. One reporter failing does
    not stop the others: their files may be all that is left of a long run."""
    failures = []
    for name, p in sorted(registry.reporters.items()):
        path = outputs.get(f"{name.replace('-', '_')}_out")
        try:
            if p.item.writes_file and path is not None:
                p.item.write(report, path)
            elif not p.item.writes_file and console:
                click.echo(p.item.render(report))
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
