"""One source of truth for the README's figures: its tables, its console example and its policy
list are generated from the recorded run (docs/runs/gemma-production.json) and the shipped
policies by benchmarks/readme_tables.py, and must equal what the README holds."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FIX = "run `python benchmarks/readme_tables.py --write` and commit README.md"


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readme_tables", REPO / "benchmarks" / "readme_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_every_generated_block_of_the_readme_is_up_to_date(tables: ModuleType) -> None:
    """Equal to what the generator makes now; without a recorded run, the blocks that come from
    one are empty (no figure without its run) and the policies block still is checked."""
    held = tables.in_readme(README.read_text(encoding="utf-8"))
    assert set(held) == set(tables.BLOCKS), "README.md lost or gained a generated block"
    fresh = tables.render(tables.load_if_recorded())
    stale = [name for name in tables.BLOCKS if held[name] != fresh[name]]
    assert not stale, f"README.md blocks {stale} differ from the recorded run: {FIX}"
    assert "production:" in held["policies"] and "permissive:" in held["policies"]


@pytest.fixture
def recorded(tables: ModuleType) -> object:
    if not tables.RUN.is_file():
        pytest.skip(
            f"{tables.RUN.name} is not recorded: python benchmarks/readme_run.py models/ docs/runs/"
        )
    return tables.load()


def test_the_tables_say_which_run_they_are(tables: ModuleType, recorded: object) -> None:
    report = recorded
    run = tables.run_block(report)
    assert "docs/runs/gemma-production.json" in run and report.policy in run
    assert report.started_at[:10] in run


def test_the_quality_table_holds_the_runs_numbers(tables: ModuleType, recorded: object) -> None:
    """Spot-check the generator against the results themselves, not against its own output."""
    report = recorded
    rows = [line.split(" | ") for line in tables.quality_block(report).splitlines()[2:]]
    for subject, row in zip(tables.ordered(report), rows, strict=True):
        kld = next(r for r in subject.results if r.metric == "kld_mean")
        ppl = next(r for r in subject.results if r.metric == "ppl_delta")
        assert row[4] == f"{kld.value:.4f}"
        assert row[2].startswith(f"{ppl.value * 100:+.2f} %")
        assert row[-1].rstrip(" |") == f"**{subject.verdict.value}**"


def test_replacing_a_block_keeps_the_text_around_it(tables: ModuleType) -> None:
    text = "a\n<!-- generated: run -->\nold\n<!-- /generated -->\nb\n"
    assert tables.replaced(text, {"run": "new\n"}) == (
        "a\n<!-- generated: run -->\nnew\n<!-- /generated -->\nb\n"
    )


def test_the_readme_shows_the_browser_tests_screenshot() -> None:
    text = README.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert "docs/images/report.png" in images
    assert (REPO / "docs" / "images" / "report.png").is_file()


def test_the_generator_renders_every_block_from_a_real_run(tables: ModuleType) -> None:
    """The generator on the screenshot's recorded run (a tiny random llama under production,
    benchmarks/tiny_run.py): every block is made, and the quality table holds its numbers."""
    report = tables.load(REPO / "docs" / "runs" / "tiny-production.json")
    blocks = tables.render(report)
    assert all(blocks[name].strip() for name in tables.BLOCKS if name != "payoff")
    assert blocks["payoff"] == tables.table(["subject / F16", "Q8_0", "Q2_K"], [])  # not run
    rows = [line.split(" | ") for line in blocks["quality"].splitlines()[2:]]
    for subject, row in zip(tables.ordered(report), rows, strict=True):
        kld = next(r for r in subject.results if r.metric == "kld_mean")
        assert (
            row[4] == f"{kld.value:.4f}" and row[-1].rstrip(" |") == f"**{subject.verdict.value}**"
        )
    assert "tiny-q2_k.gguf" in blocks["console"] and "FAIL" in blocks["console"]
