"""``qgate plugins``: every installed backend, check, reporter and command, and who provides it."""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from qgate.cli.plain import plain
from qgate.options import describe_schema
from qgate.plugins import Provided, Registry


def plugins_command(registry: Registry) -> click.Command:
    @click.command("plugins")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.option(
        "--mypy-path",
        is_flag=True,
        help="print the folders mypy must search to see qgate's types under an editable "
        "install (for MYPYPATH; empty for a regular install)",
    )
    def plugins(as_json: bool, mypy_path: bool) -> None:
        """List installed backends, checks (with their options), reporters and commands, and
        the distribution providing each."""
        if mypy_path:
            click.echo(os.pathsep.join(str(d) for d in source_folders(registry)))
            return
        data = plugin_listing(registry)
        if as_json:
            click.echo(json.dumps(plain(data), indent=2))
            return
        for line in listing_lines(data):
            click.echo(line)

    return plugins


def listing_lines(data: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The listing as text: one line per item, and under each check its options with their
    type, default and meaning, as a policy's ``options:`` takes them."""
    lines = []
    for kind, items in plain(data).items():
        lines.append(f"{kind}:")
        for item in items:
            lines.append(f"  {item['name']:<16} {item['provider']:<24} {item['description']}")
            for option in item.get("options", []):
                lines.append("      " + option_text(option))
    return lines


def option_text(option: dict[str, Any]) -> str:
    """``max_delta: float = 0.01  largest relative PPL rise``, or ``(required)``."""
    if option.get("required"):
        default = " (required)"
    else:
        default = f" = {json.dumps(option.get('default'), ensure_ascii=False)}"
    text = f"{option['name']}: {option['type']}{default}"
    return f"{text}  {option['help']}" if option.get("help") else text


def source_folders(registry: Registry) -> list[Path]:
    """The folders holding qgate's package and the registered plugins' packages, where they
    are not in site-packages. An editable install reaches them through an import hook, which
    mypy does not follow; mypy refuses site-packages in MYPYPATH, so those are left out."""
    site_packages = {
        Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]
    }
    names = ["qgate"] + [
        plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        for plugin in registry.pm.get_plugins()
    ]
    folders: list[Path] = []
    for name in names:
        module = sys.modules.get(name.split(".")[0])
        file = getattr(module, "__file__", None)
        if not file:
            continue
        folder = Path(file).resolve().parent.parent
        if folder not in site_packages and folder not in folders:
            folders.append(folder)
    return folders


def plugin_listing(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """What ``qgate plugins --json`` prints: one row per registered item, by kind."""
    return {
        "backends": _rows(registry.backends),
        "checks": _rows(registry.checks, with_options=True),
        "reporters": _rows(registry.reporters),
        "commands": _rows(registry.commands),
    }


def _rows(items: dict[str, Provided[Any]], with_options: bool = False) -> list[dict[str, Any]]:
    out = []
    for name, p in sorted(items.items()):
        row = {
            "name": name,
            "provider": p.provider,
            "plugin": p.plugin,
            "description": getattr(p.item, "description", "") or "",
        }
        if with_options:
            row["options"] = describe_schema(p.item.Options)
        out.append(row)
    return out
