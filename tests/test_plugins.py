"""Tests for plugin discovery: entry points, the environment switches, and conflicts."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import click.testing
import pytest

import qgate.plugins
from qgate import __version__ as QGATE_VERSION
from qgate.check import Check, CheckContext
from qgate.errors import PluginError, UsageError
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.plugins import Registry, make_plugin_manager
from qgate.policy import load_policy
from qgate.results import CheckResult

BUILTIN = {
    "backends": {"fake", "gguf"},
    "checks": {"perplexity", "kl-divergence", "quant-floor"},
    "reporters": {"console", "json", "junit", "html", "markdown"},
}


# --------------------------------------------------------------------------------------------
# small plugins


@dataclass
class ThresholdOptions:
    limit: float = option(1.0, "a limit", minimum=0)


class NamedCheck(Check):
    """A check whose name is given per instance, for conflict tests."""

    name = "unnamed"
    Options = ThresholdOptions

    def __init__(self, name: str):
        self.name = name  # type: ignore[misc]

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        return [ctx.result("constant", 0.5, threshold=ctx.options.limit)]


class DupPluginA:
    @hookimpl
    def qgate_checks(self) -> list[Check]:
        return [NamedCheck("dup-check")]


class DupPluginB:
    @hookimpl
    def qgate_checks(self) -> list[Check]:
        return [NamedCheck("other-check"), NamedCheck("dup-check")]


class ShadowsPerplexity:
    @hookimpl
    def qgate_checks(self) -> list[Check]:
        return [NamedCheck("perplexity")]


class ReturnsACheckNotAList:
    @hookimpl
    def qgate_checks(self) -> Any:
        return NamedCheck("lonely")


class ReturnsADict:
    @hookimpl
    def qgate_reporters(self) -> Any:
        return {"name": "dict-reporter"}


class ReturnsNone:
    @hookimpl
    def qgate_checks(self) -> Any:
        return None


class RegistersANamelessCheck:
    @hookimpl
    def qgate_checks(self) -> Any:
        return [SimpleNamespace(name="")]


class FakeDist:
    def __init__(self, name: str, version: str):
        self.name = name
        self.version = version


class FakeEntryPoint:
    """Duck-types importlib.metadata.EntryPoint, with a distribution of our choosing."""

    def __init__(self, name: str, dist: str, load: Callable[[], object], version: str = "9.9"):
        self.name = name
        self.group = "qgate"
        self.dist = FakeDist(dist, version)
        self._load = load

    def load(self) -> object:
        return self._load()


def _broken_import() -> object:
    raise ImportError("No module named 'numpy_extra_thing'")


@pytest.fixture
def extra_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Add entry points next to the installed ones, as if another distribution were installed."""
    real = qgate.plugins.entry_points

    def install(*extra: object) -> None:
        monkeypatch.setattr(
            qgate.plugins, "entry_points", lambda group: [*real(group=group), *extra]
        )

    return install


def names(registry: Registry) -> dict[str, set[str]]:
    return {
        "backends": set(registry.backends),
        "checks": set(registry.checks),
        "reporters": set(registry.reporters),
    }


# --------------------------------------------------------------------------------------------
# qgate plugins


def test_plugins_json_lists_every_builtin(qgate: Callable[..., Any]) -> None:
    result = qgate("plugins", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert set(data) == {"backends", "checks", "reporters", "commands"}
    for kind, expected in BUILTIN.items():
        rows = {row["name"]: row for row in data[kind]}
        assert expected <= set(rows), (kind, sorted(rows))
        for name in expected:
            assert rows[name]["provider"].startswith("qgate-llm "), rows[name]
            assert rows[name]["plugin"].startswith("qgate-llm:"), rows[name]
            assert rows[name]["description"], rows[name]
    checks = {row["name"]: row for row in data["checks"]}
    options = {o["name"]: o for o in checks["perplexity"]["options"]}
    assert options["max_delta"]["default"] == 0.01
    assert options["max_delta"]["type"] == "a number or null"
    assert "options" not in data["backends"][0]


def test_plugins_text_output(qgate: Callable[..., Any]) -> None:
    result = qgate("plugins")
    assert result.code == 0, result
    assert result.out.startswith("backends:\n")
    lines = result.out.splitlines()
    for name in BUILTIN["checks"] | BUILTIN["reporters"]:
        assert any(line.split()[:1] == [name] and "qgate-llm 0.1.0" in line for line in lines), name


def test_provenance_of_builtins() -> None:
    registry = Registry.from_environment()
    assert names(registry)["checks"] >= BUILTIN["checks"]
    assert registry.reporters["html"].plugin == "qgate-llm:html"
    assert registry.checks["kl-divergence"].plugin == "qgate-llm:kl-divergence"
    assert registry.backends["fake"].provider == f"qgate-llm {QGATE_VERSION}"
    assert registry.backend("fake").name == "fake"


def test_unknown_backend_suggests() -> None:
    with pytest.raises(UsageError, match=r"no backend named 'gguff' \(did you mean 'gguf'\?\)"):
        Registry.from_environment().backend("gguff")


# --------------------------------------------------------------------------------------------
# allow / block / autoload


def test_block_drops_the_html_reporter() -> None:
    registry = Registry(make_plugin_manager(block=["html"]))
    assert "html" not in registry.reporters
    assert {"console", "json", "junit", "markdown"} <= set(registry.reporters)
    assert BUILTIN["checks"] <= set(registry.checks)


def test_block_by_distribution_name_drops_everything_it_provides() -> None:
    registry = Registry(make_plugin_manager(block=["qgate-llm"]))
    found = names(registry)
    assert not (found["backends"] & BUILTIN["backends"])
    assert not (found["checks"] & BUILTIN["checks"])
    assert not (found["reporters"] & BUILTIN["reporters"])


def test_block_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, qgate: Callable[..., Any]
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS_BLOCK", " html , markdown ")
    registry = Registry.from_environment()
    assert not {"html", "markdown"} & set(registry.reporters)
    assert "json" in registry.reporters
    result = qgate("check", "--help")
    assert result.code == 0, result
    assert "--junit" in result.out
    assert "--html" not in result.out  # a blocked reporter adds no option


def test_allow_keeps_only_those() -> None:
    registry = Registry(make_plugin_manager(allow=["perplexity", "console", "fake"]))
    assert set(registry.checks) == {"perplexity"}
    assert set(registry.reporters) == {"console"}
    assert set(registry.backends) == {"fake"}


def test_allow_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QGATE_PLUGINS_ALLOW", "quant-floor")
    registry = Registry.from_environment()
    assert set(registry.checks) == {"quant-floor"}
    assert registry.reporters == {}


def test_argument_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QGATE_PLUGINS_BLOCK", "perplexity")
    assert "perplexity" not in Registry.from_environment().checks
    assert "perplexity" in Registry.from_environment(block=[]).checks


def test_block_wins_over_allow() -> None:
    pm = make_plugin_manager(allow=["perplexity", "quant-floor"], block=["perplexity"])
    registry = Registry(pm)
    assert set(registry.checks) == {"quant-floor"}


def test_autoload_off_still_loads_qgates_own(extra_entry_points: Callable[..., None]) -> None:
    extra_entry_points(FakeEntryPoint("outsider", "someone-else", lambda: DupPluginA()))
    registry = Registry(make_plugin_manager(autoload=False))
    assert BUILTIN["checks"] <= set(registry.checks)
    assert BUILTIN["reporters"] <= set(registry.reporters)
    assert BUILTIN["backends"] <= set(registry.backends)
    assert "dup-check" not in registry.checks  # the third party's entry point was not loaded
    registry = Registry(make_plugin_manager(autoload=True))
    assert registry.checks["dup-check"].provider == "someone-else 9.9"
    assert registry.checks["dup-check"].plugin == "someone-else:outsider"


def test_autoload_off_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, extra_entry_points: Callable[..., None]
) -> None:
    extra_entry_points(FakeEntryPoint("broken", "someone-else", _broken_import))
    monkeypatch.setenv("QGATE_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = Registry.from_environment()  # the broken third party is never imported
    assert BUILTIN["checks"] <= set(registry.checks)


# --------------------------------------------------------------------------------------------
# QGATE_PLUGINS: modules under development


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module, not installed, that registers the check ``dev-check``."""
    name = f"qgate_dev_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            from qgate.check import Check
            from qgate.hookspecs import hookimpl
            from qgate.options import option


            @dataclass
            class Options:
                floor: int = option(5, "a floor", minimum=0)


            class DevCheck(Check):
                name = "dev-check"
                description = "a check under development"
                Options = Options

                def run(self, ctx):
                    return [ctx.result("answer", 42.0, threshold=float(ctx.options.floor))]


            @hookimpl
            def qgate_checks():
                return [DevCheck()]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_qgate_plugins_env_registers_a_module(
    plugin_module: str, monkeypatch: pytest.MonkeyPatch, qgate: Callable[..., Any], tmp_path: Path
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", f"{plugin_module}")
    registry = Registry.from_environment()
    assert registry.checks["dev-check"].provider == f"module {plugin_module}"
    assert BUILTIN["checks"] <= set(registry.checks)

    result = qgate("plugins", "--json")
    assert result.code == 0, result
    rows = {row["name"]: row for row in json.loads(result.out)["checks"]}
    assert rows["dev-check"]["provider"] == f"module {plugin_module}"
    assert rows["dev-check"]["options"][0]["name"] == "floor"

    policy = tmp_path / "dev.yaml"
    policy.write_text("checks:\n  - use: dev-check\n    options: {flor: 3}\n")
    result = qgate("policy", "validate", policy)
    assert result.code == 2, result
    assert "checks[0].options.flor" in result.err
    assert "did you mean 'floor'" in result.err


def test_qgate_plugins_env_with_autoload_off(
    plugin_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", plugin_module)
    monkeypatch.setenv("QGATE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "dev-check" in Registry.from_environment().checks


def test_modules_argument_registers_once(
    plugin_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", plugin_module)
    registry = Registry(make_plugin_manager(modules=[plugin_module]))  # the same module twice
    assert "dev-check" in registry.checks


def test_qgate_plugins_env_missing_module(
    monkeypatch: pytest.MonkeyPatch, qgate: Callable[..., Any]
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", "qgate_no_such_plugin_module")
    with pytest.raises(PluginError, match="cannot import plugin module 'qgate_no_such_plugin_"):
        make_plugin_manager()
    result = qgate("plugins")
    assert result.code == 2, result
    assert "qgate_no_such_plugin_module" in result.err


# --------------------------------------------------------------------------------------------
# conflicts and malformed plugins


def test_two_plugins_registering_one_check_name() -> None:
    pm = make_plugin_manager(plugins=[DupPluginA(), DupPluginB()])
    with pytest.raises(PluginError) as exc:
        Registry(pm)
    message = str(exc.value)
    assert "two plugins register the check 'dup-check'" in message
    assert "'DupPluginA' from object DupPluginA" in message
    assert "'DupPluginB' from object DupPluginB" in message
    assert "QGATE_PLUGINS_BLOCK" in message
    assert exc.value.exit_code == 2


def test_plugin_shadowing_a_builtin_names_both_providers() -> None:
    pm = make_plugin_manager(plugins=[ShadowsPerplexity()])
    with pytest.raises(PluginError) as exc:
        Registry(pm)
    message = str(exc.value)
    assert "two plugins register the check 'perplexity'" in message
    assert f"'qgate-llm:perplexity' from qgate-llm {QGATE_VERSION}" in message
    assert "'ShadowsPerplexity' from object ShadowsPerplexity" in message


def test_conflict_fails_the_cli_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    extra_entry_points: Callable[..., None],
    qgate: Callable[..., Any],
) -> None:
    extra_entry_points(FakeEntryPoint("shadow", "qgate-shadow", lambda: ShadowsPerplexity()))
    result = qgate("plugins")
    assert result.code == 2, result
    assert "two plugins register the check 'perplexity'" in result.err
    assert "qgate-shadow 9.9" in result.err
    monkeypatch.setenv("QGATE_PLUGINS_BLOCK", "qgate-shadow")  # the advertised way out
    result = qgate("plugins")
    assert result.code == 0, result


@pytest.mark.parametrize(
    ("plugin", "hook"),
    [(ReturnsACheckNotAList(), "qgate_checks"), (ReturnsADict(), "qgate_reporters")],
)
def test_plugin_returning_a_non_list(plugin: object, hook: str) -> None:
    pm = make_plugin_manager(plugins=[plugin])
    with pytest.raises(PluginError) as exc:
        Registry(pm)
    name = type(plugin).__name__
    assert f"plugin {name!r} (object {name}): {hook}() must return a list" == str(exc.value)


def test_plugin_returning_none_registers_nothing() -> None:
    registry = Registry(make_plugin_manager(plugins=[ReturnsNone()]))
    assert BUILTIN["checks"] <= set(registry.checks)


def test_plugin_registering_a_nameless_check() -> None:
    with pytest.raises(PluginError) as exc:
        Registry(make_plugin_manager(plugins=[RegistersANamelessCheck()]))
    assert str(exc.value) == (
        "plugin 'RegistersANamelessCheck' (object RegistersANamelessCheck) "
        "registered a check without a name"
    )


def test_entry_point_failing_to_import(extra_entry_points: Callable[..., None]) -> None:
    extra_entry_points(FakeEntryPoint("fancy", "qgate-fancy-check", _broken_import))
    with pytest.raises(PluginError) as exc:
        make_plugin_manager()
    message = str(exc.value)
    assert "plugin 'fancy' from distribution 'qgate-fancy-check' failed to import" in message
    assert "ImportError: No module named 'numpy_extra_thing'" in message
    assert isinstance(exc.value.__cause__, ImportError)


def test_real_entry_point_to_a_missing_module(
    extra_entry_points: Callable[..., None], qgate: Callable[..., Any]
) -> None:
    extra_entry_points(EntryPoint(name="ghost", value="qgate_ghost_plugin_xyz", group="qgate"))
    with pytest.raises(PluginError) as exc:
        make_plugin_manager()
    assert str(exc.value).startswith(
        "plugin 'ghost' from distribution 'unknown' failed to import: ModuleNotFoundError"
    )
    result = qgate("policy", "list")
    assert result.code == 2, result
    assert "plugin 'ghost'" in result.err
    assert "Traceback" not in result.err


def test_blocked_entry_point_is_never_imported(extra_entry_points: Callable[..., None]) -> None:
    extra_entry_points(FakeEntryPoint("fancy", "qgate-fancy-check", _broken_import))
    for blocked in (["fancy"], ["qgate-fancy-check"]):
        assert BUILTIN["checks"] <= set(Registry(make_plugin_manager(block=blocked)).checks)


# --------------------------------------------------------------------------------------------
# the other hooks: commands and policy directories


@click.command("hello")
def hello_command() -> None:
    """Say hello (from a plugin)."""
    click.echo("hello from a plugin")


class CommandPlugin:
    @hookimpl
    def qgate_commands(self) -> list[click.Command]:
        return [hello_command]


def test_plugin_policy_dir_makes_a_policy_nameable(tmp_path: Path) -> None:
    (tmp_path / "team-gate.yaml").write_text(
        "checks:\n  - use: quant-floor\n    options: {min_bits_per_weight: 3}\n"
    )

    class PolicyDirPlugin:
        @hookimpl
        def qgate_policy_dirs(self) -> list[Path]:
            return [tmp_path]

    registry = Registry(make_plugin_manager(plugins=[PolicyDirPlugin()]))
    assert registry.policy_dirs == [tmp_path]
    policy = load_policy("team-gate", registry.check_objects(), extra_dirs=registry.policy_dirs)
    assert policy.check_options["quant-floor"].min_bits_per_weight == 3.0


def test_plugin_command_is_added_to_the_cli() -> None:
    from qgate.cli import make_cli

    registry = Registry(make_plugin_manager(plugins=[CommandPlugin()]))
    assert registry.commands["hello"].provider == "object CommandPlugin"
    cli = make_cli(registry)
    assert cli.commands["hello"] is hello_command
    result = click.testing.CliRunner().invoke(cli, ["hello"])
    assert result.exit_code == 0
    assert result.output == "hello from a plugin\n"
