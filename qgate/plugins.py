"""Finding plugins and collecting what they register.

:func:`make_plugin_manager` builds a fresh :class:`pluggy.PluginManager` (there is no global one)
from the ``qgate`` entry-point group. qgate's built-ins are entry points of the ``qgate-llm``
distribution like any other. Environment switches:

``QGATE_DISABLE_PLUGIN_AUTOLOAD=1``
    load only qgate's own entry points (plus ``QGATE_PLUGINS``).
``QGATE_PLUGINS=mod.a,mod.b``
    also register these modules (importable paths), e.g. a plugin under development.
``QGATE_PLUGINS_ALLOW=name,...`` / ``QGATE_PLUGINS_BLOCK=name,...``
    keep only / drop entry points by entry-point name or distribution name.

:class:`Registry` then asks every plugin for its backends, checks and reporters and rejects a
name registered twice, naming both providers.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

import pluggy

from qgate import DISTRIBUTION, hookspecs
from qgate.errors import PluginError

ENTRY_POINT_GROUP = "qgate"
ENV_DISABLE_AUTOLOAD = "QGATE_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "QGATE_PLUGINS"
ENV_ALLOW = "QGATE_PLUGINS_ALLOW"
ENV_BLOCK = "QGATE_PLUGINS_BLOCK"

T = TypeVar("T")


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _normalise(name: str) -> str:
    """Distribution names compare as pip does: ``qgate_Example.check`` is ``qgate-example-check``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def make_plugin_manager(
    *,
    autoload: bool | None = None,
    allow: Iterable[str] | None = None,
    block: Iterable[str] | None = None,
    modules: Iterable[str] = (),
    plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """A plugin manager with the qgate hooks and the plugins the environment selects.

    Arguments override the environment variables of the same meaning; ``plugins`` are objects
    registered directly (handy in tests).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    provenance: dict[int, str] = {}
    if autoload is None:
        autoload = os.environ.get(ENV_DISABLE_AUTOLOAD, "") in ("", "0", "false")
    allowed = {_normalise(n) for n in (_env_list(ENV_ALLOW) if allow is None else allow)}
    blocked = {_normalise(n) for n in (_env_list(ENV_BLOCK) if block is None else block)}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        names = {_normalise(ep.name), _normalise(dist)}
        if not autoload and _normalise(dist) != DISTRIBUTION:
            continue
        if (allowed and not names & allowed) or names & blocked:
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # sys.exit at import must not end qgate
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        version = ep.dist.version if ep.dist is not None else ""
        _register(pm, plugin, f"{dist}:{ep.name}", provenance, f"{dist} {version}".strip())
    for module_name in [*_env_list(ENV_PLUGINS), *modules]:
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as exc:  # ImportError, or a module that runs sys.exit
            raise PluginError(
                f"cannot import plugin module {module_name!r} from {ENV_PLUGINS}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, module, module_name, provenance, f"module {module_name}")
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        _register(pm, plugin, name, provenance, f"object {name}")
    pm.qgate_provenance = provenance  # type: ignore[attr-defined]
    return pm


def _register(
    pm: pluggy.PluginManager, plugin: object, name: str, provenance: dict[int, str], provider: str
) -> None:
    if pm.is_registered(plugin):
        return  # one module under two entry points registers once
    try:
        pm.register(plugin, name=name)
    except ValueError as exc:
        raise PluginError(f"cannot register plugin {name!r} ({provider}): {exc}") from exc
    provenance[id(plugin)] = provider


def _as_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


@dataclass(frozen=True)
class Provided(Generic[T]):
    """A registered item and who provides it."""

    item: T
    plugin: str  #: the plugin's registered name (``distribution:entry-point``)
    provider: str  #: the distribution and version, e.g. ``qgate-llm 0.1.0``


class Registry:
    """Everything the installed plugins register, by name, duplicates rejected."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.backends: dict[str, Provided[Any]] = self._collect("qgate_backends", "backend")
        self.checks: dict[str, Provided[Any]] = self._collect("qgate_checks", "check")
        self.reporters: dict[str, Provided[Any]] = self._collect("qgate_reporters", "reporter")
        self.commands: dict[str, Provided[Any]] = self._collect("qgate_commands", "command")
        self.policy_dirs: list[Path] = [
            Path(p)
            for impl in pm.hook.qgate_policy_dirs.get_hookimpls()
            for p in _as_list(impl.function())
        ]

    @classmethod
    def from_environment(cls, **kwargs: Any) -> Registry:
        return cls(make_plugin_manager(**kwargs))

    def _collect(self, hook_name: str, kind: str) -> dict[str, Provided[Any]]:
        provenance: dict[int, str] = getattr(self.pm, "qgate_provenance", {})
        found: dict[str, Provided[Any]] = {}
        # pluggy calls the most recently registered plugin first; reverse for registration order
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            provider = provenance.get(id(impl.plugin), plugin_name)
            try:
                items = impl.function()
            except (Exception, SystemExit) as exc:
                raise PluginError(
                    f"plugin {plugin_name!r} ({provider}): {hook_name}() raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if items is None:
                continue
            if not isinstance(items, (list, tuple)):
                raise PluginError(
                    f"plugin {plugin_name!r} ({provider}): {hook_name}() must return a list"
                )
            for item in items:
                name = getattr(item, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(
                        f"plugin {plugin_name!r} ({provider}) registered a {kind} without a name"
                    )
                if name in found:
                    other = found[name]
                    raise PluginError(
                        f"two plugins register the {kind} {name!r}: {other.plugin!r} from "
                        f"{other.provider} and {plugin_name!r} from {provider}; uninstall one, or "
                        f"block one with {ENV_BLOCK}"
                    )
                found[name] = Provided(item, plugin_name, provider)
        return found

    def check_objects(self) -> dict[str, Any]:
        return {name: p.item for name, p in self.checks.items()}

    def backend(self, name: str) -> Any:
        from qgate.errors import UsageError
        from qgate.options import suggest

        if name not in self.backends:
            raise UsageError(
                f"no backend named {name!r}{suggest(name, self.backends)}; installed: "
                f"{', '.join(sorted(self.backends)) or 'none'}"
            )
        return self.backends[name].item
