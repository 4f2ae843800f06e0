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
#: a third-party action pinned by commit: a tag can be moved to other code, a commit cannot
PINNED = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
#: ``uses: owner/name@ref # comment`` as written in the files (YAML drops the comment)
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(?:\s+#\s*(\S+))?\s*$", re.MULTILINE)
#: the placeholder for the qgate action itself in the example, which a user pins to their copy
OWN_ACTION = "your-org/qgate@v1"


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
            assert PINNED.fullmatch(step["uses"]), step["uses"]


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
    # outside the workspace (the runner's temporary directory): a pull request writes the workspace
    assert inputs["cache-dir"]["default"] == ""
    assert inputs["run-id"]["default"] == ""
    assert inputs["shard"]["default"] == ""
    assert inputs["comment"]["default"] == "false"
    assert inputs["github-token"]["default"] == "${{ github.token }}"
    for name in ("junit", "html", "json", "markdown"):
        assert inputs[name]["default"].startswith("qgate-report/")
    assert {"verdict", "report", "run-id", "invocation-id"} <= set(action["outputs"])


def test_the_steps_after_run_read_only_what_run_wrote(action: dict[str, Any]) -> None:
    """outputs, summary, annotate and comment get the run step's ids and its results file, so a
    stale or foreign results file in the workspace is never reported (issue 19, class 5)."""
    steps = action["runs"]["steps"]
    readers = [
        s for s in steps if re.search(r"qgate github (outputs|summary|comment)", s.get("run", ""))
    ]
    assert len(readers) == 3
    for step in readers:
        env = step["env"]
        assert env["QGATE_STEP_RESULTS"] == "${{ steps.run.outputs.results-file }}", step["name"]
        assert env["QGATE_RUN_ID"] == "${{ steps.run.outputs.run-id }}", step["name"]
        assert env["QGATE_INVOCATION_ID"] == "${{ steps.run.outputs.invocation-id }}"
        assert env["QGATE_EXPECT_INVOCATION"] == "true"
    run = next(s for s in steps if s.get("id") == "run")
    assert run["env"]["QGATE_RUN_ID"] == "${{ inputs.run-id }}"
    assert run["env"]["QGATE_CACHE_DIR"] == "${{ steps.key.outputs.dir }}"
    for step in steps:
        if "actions/cache/" in step.get("uses", ""):
            assert step["with"]["path"] == "${{ steps.key.outputs.dir }}"


def test_action_references_only_what_exists(action: dict[str, Any]) -> None:
    text = (REPO / "action.yml").read_text(encoding="utf-8")
    used_inputs = set(re.findall(r"inputs\.([\w-]+)", text))
    assert used_inputs <= set(action["inputs"]), used_inputs - set(action["inputs"])
    ids = {step.get("id") for step in action["runs"]["steps"]}
    assert set(re.findall(r"steps\.([\w-]+)\.", text)) <= ids
    for step in action["runs"]["steps"]:
        for called in re.findall(r"qgate github ([\w-]+)", step.get("run", "")):
            assert called in STEPS, called
        # inputs reach scripts through env:, never pasted into the script (script injection)
        assert "${{" not in step.get("run", ""), step.get("name")
    install = next(s for s in action["runs"]["steps"] if s.get("name") == "Install qgate")
    assert install["env"]["QGATE_ACTION_PATH"] == "${{ github.action_path }}"
    gate = action["runs"]["steps"][-1]
    assert gate["if"] == "always()" and 'exit "${QGATE_EXIT_CODE:-3}"' in gate["run"]


def test_every_action_is_pinned_by_commit_with_its_version() -> None:
    """Every third-party action in action.yml and the workflows is pinned by a 40-hex commit SHA
    with its version in a comment, and one action's version has one SHA everywhere."""
    seen: dict[tuple[str, str], str] = {}
    for path in [REPO / "action.yml", *WORKFLOWS]:
        text = path.read_text(encoding="utf-8")
        uses = USES_LINE.findall(text)
        assert uses, path.name
        for ref, version in uses:
            if ref.startswith("./") or ref == OWN_ACTION:
                continue
            assert PINNED.fullmatch(ref), f"{path.name}: {ref} is not pinned by commit SHA"
            assert re.fullmatch(r"v\d+\.\d+\.\d+", version or ""), f"{path.name}: {ref}"
            action, sha = ref.split("@")
            root = "/".join(action.split("/")[:2])  # actions/cache/save: actions/cache
            assert seen.setdefault((root, version), sha) == sha, f"{path.name}: {ref} {version}"


def test_every_checkout_keeps_no_credentials() -> None:
    """actions/checkout writes the token into .git/config unless told not to; no step here
    needs it, and the code under test must not find it."""
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name, job in workflow["jobs"].items():
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, (
                        f"{path.name}: job {name}"
                    )


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
            if s.get("uses", "").startswith("your-org/qgate@")
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
