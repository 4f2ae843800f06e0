"""The ``qgate`` command group and the process entry point.

:func:`make_cli` builds the group from a :class:`~qgate.plugins.Registry`: the built-in commands
(one module each in this package) and every command a plugin registers through the
``qgate_commands`` hook. :func:`main` turns what goes wrong into exit codes.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click

from qgate import __version__
from qgate.cli.baseline import baseline_command
from qgate.cli.check import check_command
from qgate.cli.inspect import inspect_command
from qgate.cli.plugins import plugins_command
from qgate.cli.policy import policy_group
from qgate.cli.results import results_commands
from qgate.errors import ExitCode, QgateError, UsageError
from qgate.plugins import Registry
from qgate.runner import Interrupted


def make_cli(registry: Registry) -> click.Group:
    """The ``qgate`` command group for the plugins in ``registry``."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="qgate")
    def cli() -> None:
        """qgate: a quality gate for quantized LLM releases.

        Measures quantized models against their full-precision reference under a YAML policy,
        writes JUnit, HTML, JSON and Markdown reports, and exits 1 when a gate fails.
        Exit codes: 0 pass, 1 gate failed, 2 usage or policy error, 3 internal error.
        """

    built_in = [
        check_command(registry),
        baseline_command(registry),
        *results_commands(registry),
        policy_group(registry),
        plugins_command(registry),
        inspect_command(registry),
    ]
    for command in built_in:
        cli.add_command(command)
    for name, provided in registry.commands.items():
        if name in cli.commands:
            raise UsageError(
                f"plugin {provided.plugin!r} adds a command {name!r} that already exists"
            )
        cli.add_command(provided.item, name)
    return cli


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: errors for people get a message and exit 2; bugs a traceback and exit 3."""
    try:
        registry = Registry.from_environment()
        cli = make_cli(registry)
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="qgate", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("qgate: aborted", err=True)
        sys.exit(ExitCode.INTERNAL_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(
            ExitCode.USAGE_ERROR if isinstance(exc, click.UsageError) else ExitCode.INTERNAL_ERROR
        )
    except QgateError as exc:
        click.echo(f"qgate: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Interrupted):
        click.echo("qgate: interrupted", err=True)
        sys.exit(ExitCode.INTERNAL_ERROR)
    except Exception:
        click.echo("qgate: internal error (please report this with the traceback):", err=True)
        traceback.print_exc()
        sys.exit(ExitCode.INTERNAL_ERROR)
    # built-in commands return their exit code; a plugin's command may return None (success)
    sys.exit(int(code) if isinstance(code, int) else ExitCode.OK)
