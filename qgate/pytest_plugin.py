"""The plugin author's kit: a pytest plugin that runs one check the way ``qgate check`` would.

Installed with qgate (the ``pytest11`` entry point ``qgate``), it gives every test session the
``qgate_check`` fixture, a :class:`CheckHarness`::

    from qgate.results import Verdict

    def test_small_vocabulary_fails(qgate_check):
        run = qgate_check.run(VocabSizeCheck(), options={"min_vocab_size": 32000},
                              subject={"metadata": {"vocab_size": 50}})
        assert run.result("vocab_size").verdict is Verdict.FAIL

The check runs through qgate's real runner under a small policy of its own: options validated
against its schema, verdicts from the policy's rules (intervals, severity, ``on_skip``), faults
contained, figures attached. Subjects and references are fake models (:mod:`qgate.testing`, with
their knobs: ``noise``, ``nan_after``, ``repeat_after``, ...) or any model file the installed
backends open, e.g. a tiny GGUF. The results come back typed (:class:`CheckResult` with its
``figures``), and :meth:`CheckRun.render` shows them through an installed reporter.

Nothing heavy is imported until a test asks for the fixture: pytest loads this plugin in every
session of an environment where qgate is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from qgate.check import Check
    from qgate.plugins import Registry
    from qgate.results import CheckResult, RunReport, Verdict

#: the small policy a check runs under unless ``policy=`` says otherwise: one short dataset, two
#: chunks of 64 tokens, so a scoring check takes well under a second on fake models
DEFAULT_POLICY: dict[str, Any] = {
    "backend": {"n_ctx": 64},
    "evaluation": {"chunks": 2, "top_k": 8, "tail_samples": 8, "bootstrap": 200},
    "datasets": ["en"],
}


@dataclass
class CheckRun:
    """What one check gave one subject: its results, typed, and the whole run's report."""

    report: RunReport
    registry: Registry = field(repr=False)
    check: str = ""

    @property
    def results(self) -> list[CheckResult]:
        """The check's results (the report may hold qgate's own too: ``gate``, when nothing
        was measured)."""
        subjects = self.report.subjects
        return [r for r in subjects[0].results if r.check == self.check] if subjects else []

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of the results (what the gate would make of this subject)."""
        return self.report.verdict

    @property
    def verdicts(self) -> dict[str, Verdict]:
        """Each result's verdict by its name (``check_id.metric``)."""
        return {r.name: r.verdict for r in self.results}

    def result(self, metric: str = "") -> CheckResult:
        """The result of ``metric`` (the only result when there is one and ``metric`` is
        empty); a test failure naming what there is otherwise."""
        if not metric and len(self.results) == 1:
            return self.results[0]
        matches = [r for r in self.results if r.metric == metric]
        if len(matches) != 1:
            have = ", ".join(repr(r.metric) for r in self.results) or "none"
            pytest.fail(f"expected one result with metric {metric!r}; results: {have}")
        return matches[0]

    def render(self, reporter: str = "markdown") -> str:
        """The run as the installed reporter ``reporter`` renders it (html, markdown, console,
        junit, json): a figure a reporter cannot show fails here, not in a user's CI."""
        if reporter not in self.registry.reporters:
            pytest.fail(f"no reporter {reporter!r}; installed: {sorted(self.registry.reporters)}")
        text: str = self.registry.reporters[reporter].item.render(self.report)
        return text


class CheckHarness:
    """Runs checks on fake or real models in a test's temporary directory (the ``qgate_check``
    fixture)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._count = 0

    def fake_model(self, name: str = "", **knobs: Any) -> Path:
        """A fake model file (:func:`qgate.testing.write_fake_model`) with these knobs."""
        from qgate.testing import write_fake_model

        self._count += 1
        return write_fake_model(
            self.directory / f"{name or f'model{self._count}'}.fake.json", **knobs
        )

    def run(
        self,
        check: Check[Any] | str,
        *,
        subject: Path | str | Mapping[str, Any] | None = None,
        reference: Path | str | Mapping[str, Any] | bool | None = None,
        options: Mapping[str, Any] | None = None,
        severity: str = "fail",
        policy: Mapping[str, Any] | None = None,
    ) -> CheckRun:
        """Run ``check`` (an instance, or the name of an installed check) on ``subject``.

        :param subject: a model path, the knobs of a fake model, or None for a plain fake model.
        :param reference: the same; None gives a fake reference to a check that needs one, and
            False none at all (to see what the check does without it).
        :param options: the check's options, as a policy's ``options:`` would give them.
        :param policy: policy keys over :data:`DEFAULT_POLICY` (``backend``, ``evaluation``,
            ``datasets``, ``on_inconclusive``, ``on_skip``).
        """
        from qgate.runner import Runner

        registry, name = self._registry(check)
        needs_reference = bool(getattr(registry.checks[name].item, "needs_reference", False))
        reference_path = None
        if reference is None and needs_reference:
            reference_path = self.fake_model("reference")
        elif reference is not None and reference is not False:
            reference_path = self._model(reference, "reference")
        entry = {"use": name, "severity": severity, "options": dict(options or {})}
        loaded = self._policy(registry, entry, policy or {})
        runner = Runner(registry, loaded, reference=str(reference_path) if reference_path else None)
        return CheckRun(runner.run([str(self._model(subject, "subject"))]), registry, name)

    def _model(self, spec: Path | str | Mapping[str, Any] | bool | None, name: str) -> Path:
        if spec is None or isinstance(spec, bool):
            return self.fake_model(name)
        if isinstance(spec, Mapping):
            return self.fake_model(name, **spec)
        return Path(spec)

    def _registry(self, check: Check[Any] | str) -> tuple[Registry, str]:
        """The installed plugins for a check given by name; for an instance, qgate's own
        plugins and the instance (replacing a built-in check of the same name)."""
        from qgate.hookspecs import hookimpl
        from qgate.plugins import Registry, make_plugin_manager

        if isinstance(check, str):
            registry = Registry(make_plugin_manager())
            if check not in registry.checks:
                pytest.fail(f"no installed check {check!r}; installed: {sorted(registry.checks)}")
            return registry, check

        class UnderTest:
            @hookimpl
            def qgate_checks(self) -> list[Any]:
                return [check]

        built_in = Registry(make_plugin_manager(autoload=False))
        same = built_in.checks.get(check.name)
        block = [same.plugin.split(":", 1)[1]] if same is not None else []
        manager = make_plugin_manager(autoload=False, block=block, plugins=[UnderTest()])
        return Registry(manager), check.name

    def _policy(
        self, registry: Registry, entry: dict[str, Any], overrides: Mapping[str, Any]
    ) -> Any:
        import yaml

        from qgate.policy import load_policy

        document = {"name": "pytest", **DEFAULT_POLICY, **overrides, "checks": [entry]}
        self._count += 1
        path = self.directory / f"policy{self._count}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return load_policy(str(path), registry.check_objects(), extra_dirs=registry.policy_dirs)


@pytest.fixture
def qgate_check(tmp_path: Path) -> CheckHarness:
    """Run a qgate check on fake or real models and get its typed results back."""
    return CheckHarness(tmp_path)
