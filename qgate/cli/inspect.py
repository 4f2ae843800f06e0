"""``qgate inspect``: a model's metadata, read without loading its weights.

``qgate inspect MODEL --identity OTHER`` is an alias of ``qgate identity MODEL OTHER``, the
command the identity plugin registers: comparing two models is that plugin's knowledge, so the
core finds its command by name in the registry and never imports the plugin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from qgate.cli.plain import as_yaml
from qgate.detection import resolve_backend
from qgate.errors import UsageError
from qgate.plugins import Registry

#: the command ``--identity`` stands for
IDENTITY_COMMAND = "identity"


def inspect_command(registry: Registry) -> click.Command:
    @click.command("inspect")
    @click.argument("model")
    @click.option("--backend", "-b", help="backend (default: detected)")
    @click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML-like text")
    @click.option(
        "--identity",
        "other",
        metavar="OTHER",
        help="compare MODEL with OTHER without loading either: the same as "
        "`qgate identity MODEL OTHER` (needs the identity plugin)",
    )
    @click.pass_context
    def inspect(
        ctx: click.Context, model: str, backend: str | None, as_json: bool, other: str | None
    ) -> Any:
        """Print a model's metadata, read without loading its weights, as YAML-like text."""
        if other is not None:
            return run_identity(ctx, registry, model, other, backend=backend, as_json=as_json)
        path = Path(model)
        info = resolve_backend(registry, path, backend).inspect(path).to_dict()
        if as_json:
            click.echo(json.dumps(info, indent=2, default=str))
            return None
        click.echo(as_yaml(info))
        return None

    return inspect


def run_identity(
    ctx: click.Context,
    registry: Registry,
    model: str,
    other: str,
    *,
    backend: str | None,
    as_json: bool,
) -> Any:
    """Invoke the registered ``identity`` command on ``model`` and ``other``, as if the user had
    typed ``qgate identity [--backend B] [--json] -- MODEL OTHER``."""
    provided = registry.commands.get(IDENTITY_COMMAND)
    if provided is None:
        raise UsageError(
            f"qgate inspect --identity runs the command 'qgate {IDENTITY_COMMAND}', which no "
            "installed plugin provides (is the identity plugin installed, or blocked with "
            "QGATE_PLUGINS_BLOCK?)"
        )
    command: click.Command = provided.item
    args = [*(["--backend", backend] if backend else []), *(["--json"] if as_json else [])]
    # the file names after --: a model named like an option is still a file
    with command.make_context(
        IDENTITY_COMMAND, [*args, "--", model, other], parent=ctx.find_root()
    ) as sub:
        return command.invoke(sub)
