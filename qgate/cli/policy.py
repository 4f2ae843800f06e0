"""``qgate policy validate|show|list``: policies checked and printed without running anything."""

from __future__ import annotations

import json

import click
import yaml

from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.policy.loader import available_policies
from qgate.policy.resolved import resolved_policy_data


def policy_group(registry: Registry) -> click.Group:
    @click.group("policy")
    def policy() -> None:
        """Validate and show policies."""

    @policy.command("validate")
    @click.argument("files", nargs=-1, required=True)
    def validate(files: tuple[str, ...]) -> None:
        """Validate policy files (names of shipped policies work too); exit 2 on the first error."""
        for file in files:
            loaded = load_policy(file, registry.check_objects(), extra_dirs=registry.policy_dirs)
            click.echo(f"{file}: ok ({len(loaded.checks)} checks, policy {loaded.name!r})")

    @policy.command("show")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of YAML")
    def show(name: str, as_json: bool) -> None:
        """Print the resolved policy (extends applied, defaults filled in)."""
        loaded = load_policy(name, registry.check_objects(), extra_dirs=registry.policy_dirs)
        data = resolved_policy_data(loaded)
        click.echo(
            json.dumps(data, indent=2)
            if as_json
            else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        )

    @policy.command("list")
    def list_policies() -> None:
        """List the policies that can be named without a path."""
        for name, path in available_policies(registry.policy_dirs).items():
            click.echo(f"{name:<16} {path}")

    return policy
