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
        if "actions/cache/" in step.get("uses", ""):  # the reference cache, or the wheel
            outputs = "key" if "reference cache" in step["name"] else "wheels"
            assert step["with"]["path"] == f"${{{{ steps.{outputs}.outputs.dir }}}}", step["name"]
            assert step["with"]["key"] == f"${{{{ steps.{outputs}.outputs.key }}}}", step["name"]


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


# -- CI cost: the llama-cpp-python wheel cached, only this job's model files fetched ----------------
def step(action: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in action["runs"]["steps"] if s.get("name") == name)


def run_step(
    action: dict[str, Any], name: str, tmp_path: Path, env: dict[str, str], path: str = ""
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run one of the action's bash steps here, as a runner would: its script under bash with
    the given environment, and what it wrote to $GITHUB_OUTPUT."""
    output = tmp_path / "github_output"
    output.write_text("")
    full_env = {
        "PATH": f"{path}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_SERVER_URL": "https://github.com",
        **env,
    }
    done = subprocess.run(
        ["bash", "-e", "-c", step(action, name)["run"]],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return done, outputs


def test_the_wheel_is_keyed_by_python_version_and_cpu_flags(
    action: dict[str, Any], tmp_path: Path
) -> None:
    env = {"QGATE_EXTRAS": "gguf", "QGATE_LLAMA_CPP_PYTHON": "0.3.36"}
    _, outputs = run_step(action, "Wheel cache key", tmp_path, env)
    python = ".".join(map(str, sys.version_info[:3]))
    assert re.fullmatch(
        rf"qgate-wheels-Linux-X64-py{re.escape(python)}-llama-cpp-python0\.3\.36"
        r"-cpu[0-9a-f]{16}-cmake[0-9a-f]{16}",
        outputs["key"],
    ), outputs
    assert outputs["dir"] == str(tmp_path / "runner-temp" / "qgate-wheels")
    assert outputs["version"] == "0.3.36"
    cuda = run_step(action, "Wheel cache key", tmp_path, {**env, "CMAKE_ARGS": "-DGGML_CUDA=on"})
    assert cuda[1]["key"] != outputs["key"]  # another build of llama.cpp, another wheel
    newer = run_step(
        action, "Wheel cache key", tmp_path, {**env, "QGATE_LLAMA_CPP_PYTHON": "0.3.37"}
    )
    assert newer[1]["key"] != outputs["key"]
    for extras in ("", "exl2", "hf, awq"):
        _, none = run_step(action, "Wheel cache key", tmp_path, {**env, "QGATE_EXTRAS": extras})
        assert none == {}, extras  # no gguf extra: nothing to build, nothing cached


FAKE_PYTHON = """#!/bin/bash
# stands in for python: pip commands are written down (a wheel is "built" into --wheel-dir),
# anything else runs in the real interpreter
if [ "$1 $2" = "-m pip" ]; then
  echo "pip ${*:3}" >> "$QGATE_LOG"
  if [ "$3" = wheel ]; then
    touch "$QGATE_WHEEL_DIR/llama_cpp_python-$QGATE_LLAMA_CPP_PYTHON-cp312-cp312-linux_x86_64.whl"
  fi
  exit 0
fi
exec REAL "$@"
"""


def test_the_wheel_is_built_once_then_installed_from_the_cache(
    action: dict[str, Any], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON.replace("REAL", sys.executable))
    fake.chmod(0o755)
    log, wheels = tmp_path / "pip.log", tmp_path / "wheels"
    env = {
        "QGATE_ACTION_PATH": str(REPO),
        "QGATE_EXTRAS": "gguf",
        "QGATE_WHEEL_DIR": str(wheels),
        "QGATE_LLAMA_CPP_PYTHON": "0.3.36",
        "QGATE_LOG": str(log),
    }
    run_step(action, "Install qgate", tmp_path, env, path=str(bin_dir))
    first = log.read_text().splitlines()
    source = REPO.resolve().as_uri()
    assert first == [
        f"pip wheel --disable-pip-version-check --no-deps --wheel-dir {wheels} "
        "llama-cpp-python==0.3.36",
        f"pip install --disable-pip-version-check --find-links {wheels} "
        f"llama-cpp-python==0.3.36 qgate-llm[gguf] @ {source}",
    ]
    log.write_text("")
    run_step(action, "Install qgate", tmp_path, env, path=str(bin_dir))  # the cache restored it
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["install"]
    log.write_text("")
    run_step(
        action,
        "Install qgate",
        tmp_path,
        {**env, "QGATE_EXTRAS": "", "QGATE_WHEEL_DIR": ""},
        path=str(bin_dir),
    )
    assert log.read_text().splitlines() == [
        f"pip install --disable-pip-version-check qgate-llm @ {source}"
    ]


FAKE_GIT = """#!/bin/bash
printf '%s\\n' "$@" > "$QGATE_LOG"
"""


def test_a_shard_fetches_only_its_own_model_files(action: dict[str, Any], tmp_path: Path) -> None:
    from qgate.testing import write_fake_model

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(FAKE_GIT)
    (bin_dir / "git").chmod(0o755)
    (tmp_path / "models" / "quants").mkdir(parents=True)
    write_fake_model(tmp_path / "models" / "ref.fake.json")
    for i in range(6):
        write_fake_model(tmp_path / "models" / "quants" / f"q{i}.fake.json")
    policy = tmp_path / "p.yaml"
    policy.write_text("checks:\n  - use: perplexity\n")  # one group per quant: a clean split
    log = tmp_path / "git.log"
    env = {
        "QGATE_COMMAND": "check",
        "QGATE_MODELS": "models/quants/*.fake.json",
        "QGATE_REFERENCE": "models/ref.fake.json",
        "QGATE_POLICY": str(policy),
        "QGATE_TOKEN": "t0ken",
        "QGATE_LOG": str(log),
    }
    fetched: list[set[str]] = []
    for k in (1, 2, 3):
        run_step(
            action,
            "Fetch this job's model files",
            tmp_path,
            {**env, "QGATE_SHARD": f"{k}/3"},
            path=str(bin_dir),
        )
        args = log.read_text().splitlines()
        assert args[0] == "-c" and args[1].startswith("http.https://github.com/.extraheader=")
        assert "t0ken" not in args[1]  # base64, as actions/checkout sends it
        assert args[2:4] == ["lfs", "pull"] and args[-1] == "--exclude="
        include = args[4].removeprefix("--include=").split(",")
        assert include[0] == "models/ref.fake.json"
        fetched.append(set(include[1:]))
    assert set().union(*fetched) == {f"models/quants/q{i}.fake.json" for i in range(6)}
    assert sum(len(f) for f in fetched) == 6  # each quant fetched by exactly one shard
    run_step(
        action,
        "Fetch this job's model files",
        tmp_path,
        {**env, "QGATE_COMMAND": "baseline"},
        path=str(bin_dir),
    )
    assert log.read_text().splitlines()[4] == "--include=models/ref.fake.json"


def test_model_files_are_fetched_before_anything_reads_them(action: dict[str, Any]) -> None:
    names = [s.get("name", "") for s in action["runs"]["steps"]]
    fetch = names.index("Fetch this job's model files")
    assert names.index("Install qgate") < fetch < names.index("Reference cache key")
    assert step(action, "Fetch this job's model files")["if"] == (
        "inputs.lfs == 'true' && inputs.command != 'merge'"
    )
    assert action["inputs"]["lfs"]["default"] == "false"
