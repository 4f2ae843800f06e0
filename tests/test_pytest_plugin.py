"""The plugin author's kit: the ``qgate_check`` fixture from qgate's pytest plugin."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qgate.check import Check, CheckContext
from qgate.figures import Table
from qgate.options import option
from qgate.pytest_plugin import CheckHarness
from qgate.results import CheckResult, Comparison, SkipCause, Verdict


@dataclass
class MaxNoiseOptions:
    max_noise_hint: float = option(0.5, "largest bits-per-weight deficit", minimum=0)


class BitsCheck(Check[MaxNoiseOptions]):
    """A metadata check with a table, defined in the test: what a plugin author writes."""

    name = "bits-under-test"
    Options = MaxNoiseOptions

    def run(self, ctx: CheckContext[MaxNoiseOptions]) -> list[CheckResult]:
        bits = ctx.subject.info.bits_per_weight
        table = Table("Bits", ["model", "bpw"], [[ctx.subject.info.label, bits]])
        return [ctx.result("bpw", bits, threshold=4.0, comparison=Comparison.GE, tables=[table])]


class ReplacesPerplexity(Check[MaxNoiseOptions]):
    """A check under test with a built-in's name: it replaces the built-in for the run."""

    name = "perplexity"
    Options = MaxNoiseOptions
    needs_reference = True

    def run(self, ctx: CheckContext[MaxNoiseOptions]) -> list[CheckResult]:
        return [ctx.result("constant", 1.0, threshold=2.0)]


def test_an_instance_runs_on_fake_metadata_and_returns_typed_results(
    qgate_check: CheckHarness,
) -> None:
    low = qgate_check.run(BitsCheck(), subject={"metadata": {"bits_per_weight": 2.5}})
    high = qgate_check.run(BitsCheck(), subject={"metadata": {"bits_per_weight": 8.5}})
    assert low.result("bpw").verdict is Verdict.FAIL and low.result().value == 2.5
    assert high.verdicts == {"bits-under-test.bpw": Verdict.PASS} and high.verdict is Verdict.PASS
    assert high.result().figures.tables[0].rows[0][1] == 8.5
    assert "<caption>Bits</caption>" in high.render("html")


def test_options_are_validated_against_the_schema(qgate_check: CheckHarness) -> None:
    from qgate.errors import PolicyError

    with pytest.raises(PolicyError, match="max_noise_hnt"):
        qgate_check.run(BitsCheck(), options={"max_noise_hnt": 1})


def test_an_installed_check_by_name_against_a_fake_reference(qgate_check: CheckHarness) -> None:
    broken = qgate_check.run("perplexity", subject={"noise": 2.0}, options={"max_delta": 0.05})
    fine = qgate_check.run("perplexity", subject={"noise": 0.0}, options={"max_delta": 0.05})
    assert broken.result("ppl_delta").verdict is Verdict.FAIL
    assert fine.result("ppl_delta").verdict is Verdict.PASS
    assert broken.result("ppl_delta").interval is not None
    assert broken.report.reference is not None  # a fake reference was made for it


def test_without_a_reference_a_scoring_check_cannot_pass(qgate_check: CheckHarness) -> None:
    run = qgate_check.run("perplexity", reference=False)
    result = run.result()
    assert result.verdict is Verdict.ERROR and result.skip_cause is SkipCause.UNAVAILABLE
    lenient = qgate_check.run("perplexity", reference=False, policy={"on_skip": "skip"})
    assert lenient.result().verdict is Verdict.SKIP


def test_a_check_under_test_replaces_a_built_in_of_its_name(qgate_check: CheckHarness) -> None:
    run = qgate_check.run(ReplacesPerplexity())
    assert run.verdicts == {"perplexity.constant": Verdict.PASS}


def test_asking_for_what_is_not_there_fails_the_test(qgate_check: CheckHarness) -> None:
    run = qgate_check.run(BitsCheck())
    with pytest.raises(pytest.fail.Exception, match="results: 'bpw'"):
        run.result("nope")
    with pytest.raises(pytest.fail.Exception, match="no reporter 'pdf'"):
        run.render("pdf")
    with pytest.raises(pytest.fail.Exception, match="no installed check 'nope'"):
        qgate_check.run("nope")


def test_a_fresh_pytest_session_gets_the_fixture_from_the_entry_point(tmp_path: Path) -> None:
    """The fixture reaches a plugin's own test suite through the pytest11 entry point, with
    no conftest: what a third-party plugin's CI sees after pip install."""
    (tmp_path / "test_it.py").write_text(
        "from qgate.results import Verdict\n"
        "def test_it(qgate_check):\n"
        "    run = qgate_check.run('quant-floor', subject={'metadata': {'bits_per_weight': 2.0}},\n"
        "                          options={'min_bits_per_weight': 4})\n"
        "    assert run.verdict is Verdict.FAIL\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout


def test_mypy_sees_qgates_types_through_the_printed_search_path(tmp_path: Path, qgate: Any) -> None:
    """Under an editable install qgate is reached through an import hook mypy cannot follow;
    ``qgate plugins --mypy-path`` names the folders to put in MYPYPATH instead."""
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.skip("mypy is not installed (the dev extra)")
    plugin = tmp_path / "my_check.py"
    plugin.write_text(
        "from qgate.results import Verdict\n"
        "verdict: int = Verdict.PASS  # a type error mypy can only see with qgate's types\n"
    )
    folders = qgate("plugins", "--mypy-path").out.strip()
    env = {**os.environ, "MYPYPATH": folders}
    done = subprocess.run(
        [mypy, "--no-incremental", str(plugin)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 'expression has type "Verdict", variable has type "int"' in done.stdout, done.stdout
    assert "import-not-found" not in done.stdout


# -- the guide says what the code does ----------------------------------------------------------
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_guide_documents_every_model_info_field() -> None:
    from qgate.backend import ModelInfo

    text = GUIDE.read_text(encoding="utf-8")
    table = text[text.index("### What a model says about itself") : text.index("## Testing")]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == [f.name for f in dataclasses.fields(ModelInfo)]


def test_the_guides_testing_example_is_the_example_plugins_test() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    testing = guide[guide.index("## Testing a plugin") :]
    example = _code_blocks(testing, "python")[0]
    tested = (GUIDE.parents[1] / "tests" / "example_plugin" / "test_vocab_size.py").read_text()
    assert example.strip() in tested


def test_the_guides_two_line_policy_runs_the_example_check_alone(
    qgate_check: CheckHarness, tmp_path: Path
) -> None:
    sys.path.insert(0, str(GUIDE.parents[1] / "tests" / "example_plugin"))
    try:
        import qgate_example_check
    finally:
        sys.path.pop(0)
    from qgate.plugins import Registry, make_plugin_manager
    from qgate.policy import load_policy

    guide = GUIDE.read_text(encoding="utf-8")
    policy_text = next(b for b in _code_blocks(guide, "yaml") if "vocab-size" in b)
    assert len(policy_text.strip().splitlines()) == 2
    (tmp_path / "vocab.yaml").write_text(policy_text)
    registry = Registry(make_plugin_manager(autoload=False, modules=["qgate_example_check"]))
    policy = load_policy(str(tmp_path / "vocab.yaml"), registry.check_objects())
    assert [spec.use for spec in policy.checks] == ["vocab-size"]
    assert policy.check_options["vocab-size"].min_vocab_size == 100000
    assert qgate_example_check.VocabSizeCheck.name == "vocab-size"
