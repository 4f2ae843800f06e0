"""The README's own examples do what the README says: the smallest policy is two lines and runs
one check, every policy snippet loads, and every command it names exists."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def smallest_policy() -> str:
    after = README[README.index("A policy can be as small as one check") :]
    return re.findall(r"```yaml\n(.*?)```", after, flags=re.S)[0]


def test_the_smallest_policy_is_two_lines_and_runs_its_one_check_alone(
    qgate: Callable[..., Any], fake: Callable[..., Path], tmp_path: Path
) -> None:
    text = smallest_policy()
    assert len(text.strip().splitlines()) == 2 and "extends" not in text
    policy = tmp_path / "floor.yaml"
    policy.write_text(text, encoding="utf-8")
    low = fake("low", metadata={"bits_per_weight": 2.6})
    high = fake("high", metadata={"bits_per_weight": 8.5})
    for model, code, verdict in ((low, 1, "fail"), (high, 0, "pass")):
        out = tmp_path / f"{model.stem}.json"
        done = qgate("check", model, "--policy", policy, "--json", out)
        assert done.code == code, done
        results = json.loads(out.read_text())["subjects"][0]["results"]
        assert [(r["check"], r["verdict"]) for r in results] == [("quant-floor", verdict)]


@pytest.mark.parametrize("index", range(len(yaml_blocks())))
def test_every_policy_snippet_loads(index: int, tmp_path: Path) -> None:
    """Each ``yaml`` block of the README is a valid policy (the action's `with:` is no policy)."""
    from qgate.plugins import Registry
    from qgate.policy import load_policy

    text = yaml_blocks()[index]
    if "checks:" not in text:
        pytest.skip("not a policy")
    for named in re.findall(r"path: ([\w./-]+)", text):  # the user's own evaluation text
        data = tmp_path / named
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text('{"text": "Ticket 1: the printer is on fire."}\n', encoding="utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    policy = load_policy(str(path), Registry.from_environment().check_objects())
    assert policy.checks


def test_every_command_in_the_readmes_table_exists(qgate: Callable[..., Any]) -> None:
    table = README[README.index("## Commands") : README.index("Exit codes:")]
    commands = {m for m in re.findall(r"^\| `qgate (\w+)", table, flags=re.M)}
    assert commands >= {"check", "inspect", "report", "merge", "policy", "plugins"}
    for command in sorted(commands):
        assert qgate(command, "--help").code == 0, command


def test_the_layout_names_every_shipped_check() -> None:
    """The README's layout says what plugins/qgate_checks holds: every check qgate ships (its
    own entry points), not a few of them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = {
        name
        for name, target in project["project"]["entry-points"]["qgate"].items()
        if target.startswith("qgate_checks.")
    }
    layout = README[README.index("## Layout") :]
    entry = layout[layout.index("plugins/qgate_checks") : layout.index("plugins/qgate_reporters")]
    named = set(re.findall(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z]+", entry))
    assert shipped and not shipped - named, f"the README's layout misses {shipped - named}"
