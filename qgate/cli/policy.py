"""``qgate policy validate|show|list``: policies checked and printed without running anything."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click
import yaml

from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.policy.loader import available_policies
from qgate.policy.model import CheckSpec, Policy
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
        """List the policies that can be named without a path: what each is for, the checks it
        runs, its evaluation text and where it lies."""
        checks = registry.check_objects()
        for name, path in available_policies(registry.policy_dirs).items():
            loaded = load_policy(str(path), checks, extra_dirs=registry.policy_dirs)
            click.echo("\n".join(policy_summary(name, loaded, path)) + "\n")

    return policy


def policy_summary(name: str, policy: Policy, path: Path) -> list[str]:
    """``qgate policy list``'s lines for one policy."""
    description = " ".join(policy.description.split()) or "(no description)"
    lines = textwrap.wrap(f"{name}: {description}", width=96, subsequent_indent="  ")
    wrapped = textwrap.wrap(
        "checks: " + ", ".join(check_summary(spec) for spec in policy.checks),
        width=96,
        initial_indent="  ",
        subsequent_indent="    ",
        break_on_hyphens=False,
    )
    lines += wrapped
    datasets = ", ".join(d.name or d.domain or str(d.path) for d in policy.datasets)
    lines.append(
        f"  datasets: {datasets}; inconclusive: {policy.on_inconclusive}; "
        f"n_ctx {policy.backend.n_ctx}, {policy.evaluation.chunks} chunks per dataset"
    )
    lines.append(f"  file: {path}")
    return lines


def check_summary(spec: CheckSpec) -> str:
    """``perplexity``, ``payoff (warn)``, ``quant-floor-moe (quant-floor, when expert_count > 0)``."""
    notes = [spec.use] if spec.key != spec.use else []
    if spec.severity != "fail":
        notes.append(spec.severity)
    if spec.when:
        notes.append("when " + ", ".join(f"{k} {v}" for k, v in spec.when.items()))
    return spec.key + (f" ({', '.join(notes)})" if notes else "")
