"""The GitHub Action's metadata (action.yml) and the workflows, checked without GitHub.

actionlint lints workflow files (and, through a workflow's ``uses: ./``, the inputs of the local
action); action.yml's own structure is validated here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted(
    [
        *(REPO / ".github" / "workflows").glob("*.yml"),
        *(REPO / "examples" / "workflows").glob("*.yml"),
    ]
)
STEPS = ("run", "cache-key", "outputs", "summary", "annotate", "comment")


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _on(workflow: dict[Any, Any]) -> Any:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def test_action_metadata_is_complete(action: dict[str, Any]) -> None:
    assert action["name"] and action["description"]
    for name, spec in action["inputs"].items():
        assert spec.get("description"), f"input {name} has no description"
        assert "default" in spec or spec.get("required"), f"input {name}: default or required"
    for name, spec in action["outputs"].items():
        assert spec.get("description"), f"output {name} has no description"
        assert re.fullmatch(r"\$\{\{ steps\.[\w-]+\.outputs\.[\w-]+ \}\}", spec["value"]), name
    assert action["runs"]["using"] == "composite"
    for index, step in enumerate(action["runs"]["steps"]):
        assert ("run" in step) != ("uses" in step), f"step {index}: exactly one of run and uses"
        if "run" in step:
            assert step.get("shell"), f"step {index} ({step.get('name')}) runs without shell:"
        else:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]


def test_action_inputs_and_defaults(action: dict[str, Any]) -> None:
    inputs = action["inputs"]
    assert {
        "models",
        "reference",
        "policy",
        "extras",
        "python-version",
        "cache-dir",
        "shard",
        "junit",
        "html",
        "json",
        "markdown",
        "comment",
        "github-token",
    } <= set(inputs)
    assert inputs["policy"]["default"] == "production"
    assert inputs["extras"]["default"] == "gguf"
    assert inputs["python-version"]["default"] == "3.12"
    assert inputs["cache-dir"]["default"] == ".qgate-cache"
    assert inputs["shard"]["default"] == ""
    assert inputs["comment"]["default"] == "false"
    assert inputs["github-token"]["default"] == "${{ github.token }}"
    for name in ("junit", "html", "json", "markdown"):
        assert inputs[name]["default"].startswith("qgate-report/")
    assert {"verdict", "report"} <= set(action["outputs"])


def test_action_references_only_what_exists(action: dict[str, Any]) -> None:
    text = (REPO / "action.yml").read_text(encoding="utf-8")
    used_inputs = set(re.findall(r"inputs\.([\w-]+)", text))
    assert used_inputs <= set(action["inputs"]), used_inputs - set(action["inputs"])
    ids = {step.get("id") for step in action["runs"]["steps"]}
    assert set(re.findall(r"steps\.([\w-]+)\.", text)) <= ids
    for step in action["runs"]["steps"]:
        for called in re.findall(r"python -m qgate\.github ([\w-]+)", step.get("run", "")):
            assert called in STEPS, called
        # inputs reach scripts through env:, never pasted into the script (script injection)
        assert "${{" not in step.get("run", ""), step.get("name")
    install = next(s for s in action["runs"]["steps"] if s.get("name") == "Install qgate")
    assert install["env"]["QGATE_ACTION_PATH"] == "${{ github.action_path }}"
    gate = action["runs"]["steps"][-1]
    assert gate["if"] == "always()" and 'exit "${QGATE_EXIT_CODE:-3}"' in gate["run"]


def test_workflows_are_least_privilege_and_never_pull_request_target() -> None:
    assert WORKFLOWS, "no workflows found"
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert "pull_request_target" not in (_on(workflow) or {}), path.name
        assert workflow.get("permissions") == {"contents": "read"}, path.name
        for name, job in workflow["jobs"].items():
            extra = {k: v for k, v in (job.get("permissions") or {}).items() if v != "read"}
            assert set(extra) <= {"pull-requests"}, f"{path.name}: job {name} asks for {extra}"


def test_the_example_has_baseline_shards_and_merge() -> None:
    workflow = yaml.safe_load((REPO / "examples/workflows/quant-release.yml").read_text())
    jobs = workflow["jobs"]
    assert jobs["check"]["needs"] == "baseline" and jobs["merge"]["needs"] == "check"
    assert jobs["check"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    commands = {
        name: [
            s.get("with", {}).get("command", "check")
            for s in job["steps"]
            if "qgate" in s.get("uses", "")
        ]
        for name, job in jobs.items()
    }
    assert commands == {"baseline": ["baseline"], "check": ["check"], "merge": ["merge"]}
    assert jobs["merge"]["permissions"]["pull-requests"] == "write"


def _actionlint() -> str | None:
    local = Path(sys.executable).parent / "actionlint"
    return str(local) if local.is_file() else shutil.which("actionlint")


def test_actionlint_passes_on_every_workflow() -> None:
    binary = _actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed: pip install -e '.[actionlint]' (needs GitHub)")
    result = subprocess.run(
        [binary, "-no-color", *map(str, WORKFLOWS)],
        cwd=REPO,  # so `uses: ./` is checked against action.yml's inputs
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
