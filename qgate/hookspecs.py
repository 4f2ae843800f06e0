"""The hooks a qgate plugin can implement.

A plugin is a module (or object) registered under the ``qgate`` entry-point group. It implements
any of these hooks with the :data:`hookimpl` marker and returns what it registers::

    from qgate.hookspecs import hookimpl

    @hookimpl
    def qgate_checks():
        return [MyCheck()]

qgate's own backends, checks and reporters are plugins registered exactly this way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from qgate.backend import Backend
    from qgate.check import Check
    from qgate.reporter import Reporter

PROJECT = "qgate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def qgate_backends() -> list[Backend]:
    """Model backends this plugin provides.

    :return: :class:`~qgate.backend.Backend` instances; each ``name`` must be unique across all
        installed plugins.
    """
    raise NotImplementedError


@hookspec
def qgate_checks() -> list[Check]:
    """Quality checks this plugin provides.

    :return: :class:`~qgate.check.Check` instances; each ``name`` is what a policy's ``use:``
        refers to and must be unique across all installed plugins.
    """
    raise NotImplementedError


@hookspec
def qgate_reporters() -> list[Reporter]:
    """Report formats this plugin provides.

    :return: :class:`~qgate.reporter.Reporter` instances; a reporter that writes a file adds a
        ``--NAME FILE`` option to ``qgate check``.
    """
    raise NotImplementedError


@hookspec
def qgate_commands() -> list[click.Command]:
    """Extra ``qgate`` subcommands.

    :return: click commands, added to the ``qgate`` group under their own names.
    """
    raise NotImplementedError


@hookspec
def qgate_policy_dirs() -> list[Path]:
    """Directories of policy files that can be named without a path (``--policy NAME``).

    :return: directories; a policy's name is its file name without ``.yaml``.
    """
    raise NotImplementedError
