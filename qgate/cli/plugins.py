"""``qgate plugins``: every installed backend, check, reporter and command, and who provides it."""

from __future__ import annotations

import json
from typing import Any

import click

from qgate.options import describe_schema
from qgate.plugins import Provided, Registry


def plugins_command(registry: Registry) -> click.Command:
    @click.command("plugins")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def plugins(as_json: bool) -> None:
        """List installed backends, checks and reporters, with who provides each."""
        data = plugin_listing(registry)
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        for kind, items in data.items():
            click.echo(f"{kind}:")
            for item in items:
                click.echo(f"  {item['name']:<16} {item['provider']:<24} {item['description']}")

    return plugins


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
