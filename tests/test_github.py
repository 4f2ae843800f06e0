"""The GitHub Action's steps (`qgate github STEP`) in a fake GitHub environment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from qgate import __version__
from qgate.results import CheckResult, RunReport, SubjectReport, Verdict
from qgate.testing import write_fake_model
from qgate_github.api import GitHubAPIError
from qgate_github.arguments import expand, qgate_arguments
from qgate_github.cache_key import cache_key
from qgate_github.command import main
from qgate_github.comment import (
    COMMENT_MARKER,
    comment_body,
    find_previous_comment,
    post_comment,
    pull_request_number,
)
from qgate_github.steps import artifact_name
from qgate_github.workflow import (
    annotation_lines,
    escape_data,
    escape_property,
    workflow_command,
)

POLICY = """
name: ci
backend: {n_ctx: 128}
evaluation: {chunks: 2, top_k: 8, bootstrap: 200}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: kl-divergence
    options: {max_mean: 0.05, min_top1_agreement: 0.8}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
"""


@pytest.fixture
def github_env(tmp_path: Path, fake) -> dict[str, str]:
    """A workspace with fake models, the action's inputs, and GitHub's files and variables."""
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "policy.yaml").write_text(POLICY)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "synchronize", "pull_request": {"number": 7}}))
    for name in ("summary.md", "output.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "runner-temp").mkdir()
    reports = tmp_path / "qgate-report"
    return {
        "QGATE_COMMAND": "check",
        "QGATE_REFERENCE": str(fake("models/ref")),
        "QGATE_POLICY": str(tmp_path / "policy.yaml"),
        "QGATE_CACHE_DIR": str(tmp_path / ".qgate-cache"),
        "QGATE_JUNIT": str(reports / "junit.xml"),
        "QGATE_HTML": str(reports / "report.html"),
        "QGATE_JSON": str(reports / "results.json"),
        "QGATE_MARKDOWN": str(reports / "summary.md"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": "acme/quants",
        "GITHUB_API_URL": "https://api.example.test",
        "GITHUB_SERVER_URL": "https://github.example.test",
        "GITHUB_RUN_ID": "1234",
        "GITHUB_WORKSPACE": str(tmp_path),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "RUNNER_OS": "Linux",
    }


def outputs(env: dict[str, str]) -> dict[str, str]:
    lines = Path(env["GITHUB_OUTPUT"]).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def after_run(env: dict[str, str]) -> dict[str, str]:
    """The environment action.yml gives the steps after ``run``: that step's outputs."""
    values = outputs(env)
    return {
        **env,
        "QGATE_EXIT_CODE": values["exit-code"],
        "QGATE_STEP_RESULTS": values.get("results-file", ""),
        "QGATE_RUN_ID": values.get("run-id", ""),
        "QGATE_INVOCATION_ID": values.get("invocation-id", ""),
        "QGATE_EXPECT_INVOCATION": "true",
    }


def run_action(env: dict[str, str], capfd: pytest.CaptureFixture[str]) -> tuple[str, int]:
    """The action's steps in order, as action.yml runs them; returns stdout and the exit code."""
    assert main(["run"], env=env) == 0  # never fails itself: the last step propagates the code
    code = int(outputs(env)["exit-code"])
    later = after_run(env)
    for step in ("outputs", "summary", "annotate"):
        assert main([step], env=later) == 0
    return capfd.readouterr().out, code


# -- escaping ---------------------------------------------------------------------------------
def test_workflow_command_escaping_follows_the_toolkit_rules() -> None:
    assert escape_data("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext: a, b"
    assert escape_property("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext%3A a%2C b"
    assert (
        workflow_command("error", "line 1\nline 2", title="q2: ppl, kld")
        == "::error title=q2%3A ppl%2C kld::line 1%0Aline 2"
    )
    assert workflow_command("notice", "plain") == "::notice::plain"


def test_annotations_escape_what_a_model_says_about_itself() -> None:
    evil = "evil\n::error::injected, really: 100%"
    report = RunReport(
        policy="p",
        subjects=[
            SubjectReport(
                path="q.gguf",
                backend="fake",
                info={"label": evil},
                results=[
                    CheckResult("perplexity", "perplexity", "ppl_delta", Verdict.FAIL, evil),
                    CheckResult("kl-divergence", "kl-divergence", "kld_mean", Verdict.WARN, "meh"),
                    CheckResult("quant-floor", "quant-floor", "", Verdict.PASS, "ok"),
                ],
            )
        ],
    )
    lines = annotation_lines(report)
    assert len(lines) == 2
    error, warning = lines
    assert error.startswith("::error title=qgate fail%3A evil%0A%3A%3Aerror%3A%3Ainjected%2C ")
    assert error.endswith("::evil%0A::error::injected, really: 100%25")
    assert warning.startswith("::warning title=qgate warn%3A ") and warning.endswith("::meh")
    assert all("\n" not in line and "\r" not in line for line in lines)


def test_annotations_are_capped_with_a_notice() -> None:
    results = [CheckResult("c", f"c{i}", "", Verdict.FAIL, "bad") for i in range(13)]
    report = RunReport(policy="p", subjects=[SubjectReport("q", "fake", results=results)])
    lines = annotation_lines(report)
    assert sum(line.startswith("::error") for line in lines) == 10
    assert lines[-1].startswith("::notice") and "3 more errors" in lines[-1]


# -- the steps on real runs -------------------------------------------------------------------
def test_a_failing_run_writes_summary_outputs_and_annotations(github_env, fake, capfd):
    fake("models/q2", noise=1.5, metadata={"bits_per_weight": 2.6})
    fake("models/q8", noise=0.01, metadata={"bits_per_weight": 8.5})
    env = {**github_env, "QGATE_MODELS": f"{Path(github_env['QGATE_REFERENCE']).parent}/q*.json"}
    out, code = run_action(env, capfd)
    assert code == 1
    values = outputs(env)
    assert values["verdict"] == "fail"
    assert values["report"] == env["QGATE_HTML"] and Path(values["report"]).is_file()
    assert values["results"] == env["QGATE_JSON"]
    assert values["artifact-name"] == "qgate-report"
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "## qgate: FAIL" in summary and "q2" in summary and "q8" in summary
    errors = [line for line in out.splitlines() if line.startswith("::error ")]
    assert any("title=qgate fail%3A q2%3A quant-floor.bits_per_weight::" in e for e in errors)
    assert not any("q8" in e for e in errors)
    # qgate's own output is fenced: nothing it prints can be a workflow command
    fence = next(line for line in out.splitlines() if line.startswith("::stop-commands::"))
    assert f"::{fence.removeprefix('::stop-commands::')}::" in out.splitlines()
    assert "$ qgate check" in out


def test_a_passing_run_sets_verdict_pass_and_no_error(github_env, fake, capfd):
    good = fake("models/q8", noise=0.01, metadata={"bits_per_weight": 8.5})
    env = {**github_env, "QGATE_MODELS": str(good), "QGATE_SHARD": "1/1"}
    out, code = run_action(env, capfd)
    assert code == 0
    values = outputs(env)
    assert values["verdict"] == "pass" and values["artifact-name"] == "qgate-report-shard-1-of-1"
    assert not [line for line in out.splitlines() if line.startswith(("::error", "::warning"))]
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "## qgate: PASS" in summary and "Shard 1/1: 2 of 2 units" in summary


def test_a_usage_error_is_exit_2_with_a_summary_that_says_so(github_env, fake, capfd):
    env = {**github_env, "QGATE_MODELS": str(fake("models/q8")), "QGATE_POLICY": "no-such-policy"}
    out, code = run_action(env, capfd)
    assert code == 2
    assert outputs(env)["verdict"] == "error" and outputs(env)["report"] == ""
    assert "exited with code 2" in Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "::error title=qgate%3A error::no results this step can trust: qgate wrote no" in out


def test_a_glob_matching_nothing_is_an_input_error(github_env, capfd):
    env = {**github_env, "QGATE_MODELS": "models/*.gguf"}
    assert main(["run"], env=env) == 0
    assert outputs(env)["exit-code"] == "2"
    assert "::error title=qgate%3A invalid input::no model matches 'models/*.gguf'" in (
        capfd.readouterr().out
    )


def test_qgate_arguments_for_each_command(github_env, tmp_path, fake):
    a, b = fake("models/a"), fake("models/b")
    env = {
        **github_env,
        "QGATE_MODELS": f"{a}\n  {b} {a}",
        "QGATE_SHARD": "2/3",
        "QGATE_ARGS": "--n-ctx 256 --dataset 'legal=my file.txt'",
    }
    args = qgate_arguments(env, run_id="github-run-1")
    # file names last, after --: newline or space separated, no duplicates
    assert args[0] == "check" and args[-3:] == ["--", str(a), str(b)]
    assert args[args.index("--shard") + 1] == "2/3"
    assert args[args.index("--run-id") + 1] == "github-run-1"
    assert args[args.index("--json") + 1] == env["QGATE_JSON"]
    assert args[-7:-3] == ["--n-ctx", "256", "--dataset", "legal=my file.txt"]
    baseline = qgate_arguments({**env, "QGATE_COMMAND": "baseline", "QGATE_ARGS": ""})
    assert baseline[0] == "baseline" and baseline[-2:] == ["--", env["QGATE_REFERENCE"]]
    assert "--cache-dir" in baseline
    shards = tmp_path / "qgate-shards"
    for k in (1, 2):
        (shards / f"qgate-report-shard-{k}-of-2").mkdir(parents=True)
        (shards / f"qgate-report-shard-{k}-of-2" / "results.json").write_text("{}")
    merge = qgate_arguments(
        {**env, "QGATE_COMMAND": "merge", "QGATE_RESULTS": f"{shards}/**/results.json"}
    )
    assert merge[0] == "merge" and len([m for m in merge if m.endswith("results.json")]) == 3
    assert merge[-3] == "--" and all(m.endswith("results.json") for m in merge[-2:])
    assert expand(f"{shards}/*/results.json", what="x")[0].endswith("1-of-2/results.json")
    with pytest.raises(Exception, match="unknown command"):
        qgate_arguments({**env, "QGATE_COMMAND": "deploy"})


def test_artifact_names() -> None:
    assert artifact_name({}) == "qgate-report"
    assert artifact_name({"QGATE_SHARD": "3/4"}) == "qgate-report-shard-3-of-4"
    assert artifact_name({"QGATE_SHARD": "3/4", "QGATE_COMMAND": "merge"}) == "qgate-report"
    assert artifact_name({"QGATE_ARTIFACT_NAME": "mine", "QGATE_SHARD": "1/2"}) == "mine"


def test_set_output_uses_a_heredoc_for_multiline_values(github_env) -> None:
    from qgate_github.workflow import set_output

    set_output("one", "value", env=github_env)
    set_output("two", "a\nb", env=github_env)
    text = Path(github_env["GITHUB_OUTPUT"]).read_text()
    assert text.startswith("one=value\ntwo<<ghadelimiter_")
    delimiter = text.splitlines()[1].split("<<", 1)[1]
    assert text.endswith(f"\na\nb\n{delimiter}\n")


def test_cache_key_names_policy_reference_and_version(github_env, fake) -> None:
    key = cache_key(github_env)
    assert key.startswith("qgate-ref-Linux-ci-") and key.endswith(f"-qgate{__version__}")
    assert cache_key(github_env) == key
    fake("models/ref", seed=3)  # another reference: another key
    assert cache_key(github_env) != key
    assert cache_key({**github_env, "QGATE_REFERENCE": ""}) == ""


# -- the pull-request comment -----------------------------------------------------------------
class FakeGitHub:
    """Records requests and answers like the REST API would."""

    def __init__(self, comments: list[dict[str, Any]], fail: int | None = None):
        self.comments = comments
        self.fail = fail
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, method, url, headers, body):
        payload = json.loads(body) if body else None
        self.requests.append((method, url, dict(headers), payload))
        if self.fail:
            raise GitHubAPIError(self.fail, "Resource not accessible by integration")
        if method == "GET":
            page = int(url.rsplit("page=", 1)[1])
            return 200, self.comments[(page - 1) * 100 : page * 100]
        return (200 if method == "PATCH" else 201), {"html_url": "https://example.test/c/1"}


def bot(id: int, body: str) -> dict[str, Any]:
    return {"id": id, "body": body, "user": {"login": "github-actions[bot]", "type": "Bot"}}


def test_pull_request_numbers_from_events() -> None:
    assert pull_request_number({"pull_request": {"number": 5}}) == 5
    assert pull_request_number({"issue": {"number": 6, "pull_request": {}}}) is None
    assert pull_request_number({"issue": {"number": 6, "pull_request": {"url": "u"}}}) == 6
    assert pull_request_number({"workflow_run": {"pull_requests": [{"number": 8}]}}) == 8
    assert pull_request_number({"workflow_run": {"pull_requests": []}}, "9") == 9
    assert pull_request_number({"ref": "refs/heads/main"}) is None


def test_the_previous_comment_is_found_by_marker_and_author() -> None:
    human = {"id": 1, "body": f"quoting {COMMENT_MARKER}", "user": {"type": "User"}}
    comments = [bot(2, "unrelated"), human, bot(3, f"{COMMENT_MARKER}\nold"), bot(4, "later")]
    assert find_previous_comment(comments)["id"] == 3
    assert find_previous_comment([human, bot(2, "x")]) is None


def test_the_comment_updates_the_previous_one(github_env) -> None:
    comments = [bot(i, f"comment {i}") for i in range(100)] + [bot(142, f"{COMMENT_MARKER}\nold")]
    http = FakeGitHub(comments)
    env = {**github_env, "GITHUB_TOKEN": "t0ken"}
    said = post_comment(env, "## qgate: PASS\n", http=http)
    assert said.startswith("updated the qgate comment on pull request #7")
    methods = [(m, url) for m, url, _, _ in http.requests]
    assert methods == [
        ("GET", "https://api.example.test/repos/acme/quants/issues/7/comments?per_page=100&page=1"),
        ("GET", "https://api.example.test/repos/acme/quants/issues/7/comments?per_page=100&page=2"),
        ("PATCH", "https://api.example.test/repos/acme/quants/issues/comments/142"),
    ]
    _, _, headers, payload = http.requests[-1]
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["Content-Type"] == "application/json"
    assert payload["body"].startswith(COMMENT_MARKER + "\n## qgate: PASS")
    assert "https://github.example.test/acme/quants/actions/runs/1234" in payload["body"]


def test_the_comment_is_created_when_there_is_none(github_env) -> None:
    http = FakeGitHub([bot(1, "hello")])
    said = post_comment({**github_env, "GITHUB_TOKEN": "t"}, "## qgate: FAIL\n", http=http)
    assert said.startswith("created")
    method, url, _, payload = http.requests[-1]
    assert (method, url) == ("POST", "https://api.example.test/repos/acme/quants/issues/7/comments")
    assert COMMENT_MARKER in payload["body"]


def test_a_forbidden_comment_is_a_warning_not_a_failure(github_env) -> None:
    said = post_comment({**github_env, "GITHUB_TOKEN": "t"}, "x", http=FakeGitHub([], fail=403))
    assert said.startswith("::warning title=qgate::could not post the pull-request comment")
    assert "HTTP 403" in said and "fork" in said


def test_no_comment_outside_a_pull_request(github_env, tmp_path) -> None:
    push = tmp_path / "push.json"
    push.write_text(json.dumps({"ref": "refs/heads/main"}))
    http = FakeGitHub([])
    env = {**github_env, "GITHUB_TOKEN": "t", "GITHUB_EVENT_PATH": str(push)}
    assert post_comment(env, "x", http=http) == "not a pull request: no comment posted"
    assert http.requests == []


def test_a_long_comment_is_truncated_within_the_limit(github_env) -> None:
    body = comment_body("| row |\n" * 20000, github_env)
    assert len(body) <= 65536 and body.startswith(COMMENT_MARKER)
    assert "Comment truncated" in body and "actions/runs/1234" in body


# -- only what this step wrote (issue 19, class 5) --------------------------------------------
def _qgate(*args: object) -> int:
    """``qgate ARGS`` in-process through the real entry point (beside ``capfd``, which the
    ``qgate`` fixture's ``capsys`` excludes)."""
    from qgate.cli import main as qgate_main

    with pytest.raises(SystemExit) as exc:
        qgate_main([str(a) for a in args])
    return exc.value.code if isinstance(exc.value.code, int) else 1


def _stale_passing_results(github_env, fake) -> Path:
    """A passing results file at the json path, as an earlier run (or the pull request) left it."""
    good = fake("models/q8", noise=0.01, metadata={"bits_per_weight": 8.5})
    stale = Path(github_env["QGATE_JSON"])
    stale.parent.mkdir(parents=True, exist_ok=True)
    code = _qgate(
        "check", good, "--reference", github_env["QGATE_REFERENCE"], "--policy",
        github_env["QGATE_POLICY"], "--json", stale, "--run-id", "github-run-1234", "-q",
    )  # fmt: skip
    assert code == 0
    return stale


def test_a_stale_results_file_is_never_reported_when_qgate_writes_none(github_env, fake, capfd):
    """A committed or left-over passing results.json and a run that fails before writing: the
    outputs said verdict=pass and the summary PASS. Now the stale file is removed first and the
    verdict is error."""
    stale = _stale_passing_results(github_env, fake)
    Path(github_env["QGATE_HTML"]).write_text("<html>stale</html>")
    env = {**github_env, "QGATE_MODELS": str(fake("models/q8")), "QGATE_POLICY": "no-such-policy"}
    _, code = run_action(env, capfd)
    assert code == 2
    assert outputs(env)["verdict"] == "error" and outputs(env)["results"] == ""
    assert not stale.exists() and not Path(env["QGATE_HTML"]).exists()  # nothing stale uploaded
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "qgate: ERROR" in summary and "PASS" not in summary


def test_a_zero_exit_without_results_of_this_step_is_an_error(github_env, fake, capfd, monkeypatch):
    """qgate exiting 0 without writing (or a stale file in its place) must not turn the gate
    green: the exit code becomes 3 and the verdict error."""
    import qgate_github.run as github

    stale = _stale_passing_results(github_env, fake)
    copy = stale.read_bytes()

    def exits_zero_and_leaves_the_old_file(args):
        stale.write_bytes(copy)  # put back where qgate was asked to write: not where it writes
        return 0

    monkeypatch.setattr(github, "run_qgate", exits_zero_and_leaves_the_old_file)
    env = {**github_env, "QGATE_MODELS": str(fake("models/q8"))}
    out, code = run_action(env, capfd)
    assert code == 3
    assert outputs(env)["verdict"] == "error"
    assert "::error title=qgate%3A no results to report::qgate wrote no results file" in out
    assert "PASS" not in Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def test_the_run_step_records_ids_and_reports_from_a_fresh_directory(github_env, fake, capfd):
    env = {**github_env, "QGATE_MODELS": str(fake("models/q8", noise=0.01))}
    assert main(["run"], env=env) == 0
    values = outputs(env)
    assert values["run-id"] == "github-run-1234" and len(values["invocation-id"]) == 32
    fresh = Path(values["results-file"])
    assert fresh.parent.parent == Path(env["RUNNER_TEMP"])  # outside the workspace
    copied = json.loads(Path(env["QGATE_JSON"]).read_text())
    assert copied == json.loads(fresh.read_text())
    assert copied["run_id"] == "github-run-1234"
    assert copied["invocation_id"] == values["invocation-id"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"QGATE_INVOCATION_ID": "0" * 32}, "written by another qgate process"),
        ({"QGATE_RUN_ID": "github-run-99"}, "belongs to run 'github-run-1234', not to this run"),
        ({"QGATE_INVOCATION_ID": ""}, "qgate wrote no results in this step"),
        ({"QGATE_STEP_RESULTS": "/nonexistent/results.json"}, "qgate wrote no results file"),
    ],
)
def test_a_foreign_or_missing_results_file_is_an_error(github_env, fake, capfd, change, said):
    env = {**github_env, "QGATE_MODELS": str(fake("models/q8", noise=0.01))}
    assert main(["run"], env=env) == 0
    later = {**after_run(env), **change}
    Path(env["GITHUB_OUTPUT"]).write_text("")
    for step in ("outputs", "summary", "annotate"):
        assert main([step], env=later) == 0
    assert outputs(env)["verdict"] == "error" and outputs(env)["results"] == ""
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "## qgate: ERROR" in summary and said in summary.replace("\\_", "_")
    assert said in capfd.readouterr().out


def test_an_edited_results_file_is_refused_with_the_reason(github_env, fake, capfd):
    """Flipping a verdict in the results file (it sits in the workspace) is an error verdict
    whose reason the summary and the annotation show; before, the summary said PASS."""
    env = {**github_env, "QGATE_MODELS": str(fake("models/q2", noise=1.5))}
    assert main(["run"], env=env) == 0
    later = after_run(env)
    path = Path(later["QGATE_STEP_RESULTS"] or env["QGATE_JSON"])
    data = json.loads(path.read_text())
    for subject in data["subjects"]:
        for result in subject["results"]:
            result["verdict"] = "pass"
    path.write_text(json.dumps(data))
    Path(env["GITHUB_OUTPUT"]).write_text("")
    for step in ("outputs", "summary", "annotate"):
        assert main([step], env=later) == 0
    assert outputs(env)["verdict"] == "error"
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "## qgate: ERROR" in summary and "PASS" not in summary
    assert "the results file was refused" in summary and "disagree" in summary
    assert "::error title=qgate%3A error::no results this step can trust" in capfd.readouterr().out


def test_merging_shards_of_another_run_is_refused_by_the_action(github_env, fake, capfd):
    """The merge step accepts only results of this workflow run: shards another run left in the
    workspace (or a pull request committed) make the gate exit 2, not pass."""
    good = fake("models/q8", noise=0.01, metadata={"bits_per_weight": 8.5})
    shards = Path(github_env["RUNNER_TEMP"]).parent / "qgate-shards"
    for index in (1, 2):
        code = _qgate(
            "check", good, "--reference", github_env["QGATE_REFERENCE"], "--policy",
            github_env["QGATE_POLICY"], "--shard", f"{index}/2", "--run-id", "github-run-77",
            "--json", shards / f"s{index}" / "results.json", "-q",
        )  # fmt: skip
        assert code == 0
    env = {**github_env, "QGATE_COMMAND": "merge", "QGATE_RESULTS": f"{shards}/*/results.json"}
    out, code = run_action(env, capfd)
    assert code == 2 and outputs(env)["verdict"] == "error"
    assert "belongs to run 'github-run-77', not to this run 'github-run-1234'" in out
    mine = {**env, "QGATE_RUN_ID": "github-run-77"}  # the run-id input: the shards' run
    Path(env["GITHUB_OUTPUT"]).write_text("")
    _, code = run_action(mine, capfd)
    assert code == 0 and outputs(mine)["verdict"] == "pass"


def test_step_run_ids() -> None:
    from qgate_github.run import step_run_id

    assert step_run_id({"GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "3"}) == "github-run-42"
    assert step_run_id({"GITHUB_RUN_ID": "42", "QGATE_RUN_ID": "mine"}) == "mine"
    assert step_run_id({}).startswith("local-") and step_run_id({}) != step_run_id({})


def test_the_cache_directory_is_outside_the_workspace_unless_asked(github_env, capfd) -> None:
    """The default cache directory was .qgate-cache in the workspace, which a pull request can
    write (issue 19, class 3): now it is under $RUNNER_TEMP, and a cache-dir inside the workspace
    gets a warning."""
    from qgate_github.cache_key import cache_directory

    env = {**github_env, "QGATE_CACHE_DIR": ""}
    assert cache_directory(env) == str(Path(env["RUNNER_TEMP"]) / "qgate-cache")
    assert "::warning" not in capfd.readouterr().out
    inside = str(Path(env["GITHUB_WORKSPACE"]) / ".qgate-cache")
    assert cache_directory({**env, "QGATE_CACHE_DIR": inside}) == inside
    assert "inside the workspace" in capfd.readouterr().out
    assert main(["cache-key"], env=env) == 0
    assert outputs(env)["dir"] == str(Path(env["RUNNER_TEMP"]) / "qgate-cache")


def test_a_report_path_that_is_a_directory_is_an_input_error(github_env, fake, capfd) -> None:
    Path(github_env["QGATE_JSON"]).mkdir(parents=True)
    env = {**github_env, "QGATE_MODELS": str(fake("models/q8"))}
    assert main(["run"], env=env) == 0
    assert outputs(env)["exit-code"] == "2"
    assert "exists and is not a file" in capfd.readouterr().out


# -- file names after -- (issue 19, class 9) ---------------------------------------------------
def test_a_model_file_named_like_an_option_is_a_file(github_env, fake, qgate, monkeypatch):
    """A glob-expanded file named --n-ctx=16 was read by click as the option (and the models
    argument then missing: exit 2). After --, it is a file."""
    workspace = Path(github_env["GITHUB_WORKSPACE"])
    monkeypatch.chdir(workspace)
    write_fake_model(workspace / "--n-ctx=16", noise=0.01, metadata={"bits_per_weight": 8.5})
    out = workspace / "r.json"
    env = {**github_env, "QGATE_MODELS": "--n-ctx=*", "QGATE_JSON": str(out)}
    args = qgate_arguments({k: v for k, v in env.items() if k != "QGATE_HTML"})
    result = qgate(*args)  # the real entry point, qgate.cli.main
    assert result.code == 0, result
    assert args[-2:] == ["--", "--n-ctx=16"]
    report = RunReport.from_dict(json.loads(out.read_text()))
    assert [s.path for s in report.subjects] == ["--n-ctx=16"]
    assert report.provenance["policy"]["backend_options"]["n_ctx"] == 128  # the policy's


def test_merge_takes_results_files_named_like_options(github_env, fake, qgate, monkeypatch):
    workspace = Path(github_env["GITHUB_WORKSPACE"])
    monkeypatch.chdir(workspace)
    result = qgate(
        "check", "--policy", github_env["QGATE_POLICY"], "--reference",
        github_env["QGATE_REFERENCE"], "--json", "--quiet.json", "-q", "--",
        str(fake("models/q8", noise=0.01, metadata={"bits_per_weight": 8.5})),
    )  # fmt: skip
    assert result.code == 0, result
    args = qgate_arguments({**github_env, "QGATE_COMMAND": "merge", "QGATE_RESULTS": "--q*.json"})
    assert qgate(*args).code == 0
    assert args[-2:] == ["--", "--quiet.json"]


# -- what a model says cannot ping, link or reverse (issue 19, class 9) ------------------------
HOSTILE = (
    "@octocat and @acme/security see [click](https://evil.example/x) "
    "![pixel](https://evil.example/p.png) <img src=x> www.evil.example #12 GH-3 "
    "\u202egnp.exe\u202c \u2066x\u2069 \u200fy\u200e"
)


def _hostile_report() -> RunReport:
    return RunReport(
        policy="p @policy-owner",
        subjects=[
            SubjectReport(
                path="models/q.gguf",
                backend="fake",
                info={"label": HOSTILE, "architecture": "llama @arch-owner"},
                results=[
                    CheckResult("perplexity", "perplexity", "ppl_delta", Verdict.FAIL, HOSTILE),
                ],
            )
        ],
        shard={
            "index": "1](https://evil.example)",
            "count": "<img src=x> @octocat",
            "units": [],
            "planned_units": [],
        },
    )


def _assert_neutral(text: str) -> None:
    assert re.search(r"@[A-Za-z]", text) is None  # no mention
    assert "://" not in text and "www.evil" not in text  # no autolink
    assert re.search(r"(?<!\\)\]\(", text) is None  # no link or image: every ]( is escaped
    assert "<img" not in text  # no HTML
    assert re.search(r"#\d|GH-\d", text) is None  # no issue reference
    assert re.search("[\u200e\u200f\u202a-\u202e\u2066-\u2069]", text) is None  # no bidi


def test_the_summary_neutralises_what_the_results_say(github_env) -> None:
    from qgate_github.results import StepResults
    from qgate_github.summary import summary_markdown

    markdown = summary_markdown(StepResults(_hostile_report()), 1)
    _assert_neutral(markdown)
    assert markdown.startswith("## qgate: FAIL")  # qgate's own Markdown is left alone
    assert "octocat" in markdown and "evil.example" in markdown  # readable, not removed
    assert "> Shard 1\\]" in markdown  # the shard note is escaped text
    body = comment_body(markdown, github_env)
    _assert_neutral(body.split("<sub>[Workflow run")[0])
    assert "(https://github.example.test/acme/quants/actions/runs/1234)" in body  # qgate's link


def test_an_error_summary_neutralises_the_reason(github_env) -> None:
    from qgate_github.results import StepResults
    from qgate_github.summary import summary_markdown

    markdown = summary_markdown(StepResults(None, f"refused: {HOSTILE}"), 2)
    _assert_neutral(markdown)
    assert markdown.startswith("## qgate: ERROR")


def test_annotations_carry_no_bidi_controls(github_env, capfd, monkeypatch) -> None:
    import qgate_github.steps as github
    from qgate_github.results import StepResults

    monkeypatch.setattr(github, "step_results", lambda env: StepResults(_hostile_report()))
    assert main(["annotate"], env=github_env) == 0
    out = capfd.readouterr().out
    assert re.search("[\u200e\u200f\u202a-\u202e\u2066-\u2069]", out) is None
    assert out.startswith("::error title=qgate fail%3A @\u200boctocat")


def test_neutralise_keeps_plain_text_and_breaks_only_pings_and_links() -> None:
    from qgate_github.untrusted import neutralise

    assert neutralise("Q4_K_M: 3.2 % (limit <= 1 %)") == "Q4_K_M: 3.2 % (limit <= 1 %)"
    assert neutralise("@a https://b www.c #1") == ("@\u200ba https:\u200b//b www\u200b.c #\u200b1")


def test_a_comment_from_a_downloaded_artifact_needs_the_gate_runs_id(github_env, fake, capfd):
    """The workflow_run pattern (docs/ci.md) posts another run's results: only with that run's
    id (QGATE_RUN_ID) are they shown; without any id nothing tells them from a stale file."""
    from qgate_github.results import step_results

    env = {**github_env, "QGATE_MODELS": str(fake("models/q8", noise=0.01))}
    assert main(["run"], env=env) == 0
    artifact = {"QGATE_JSON": env["QGATE_JSON"]}  # no run step here: no invocation id
    assert step_results({**artifact, "QGATE_RUN_ID": "github-run-1234"}).report is not None
    other = step_results({**artifact, "QGATE_RUN_ID": "github-run-9"})
    assert other.report is None and "not to this run 'github-run-9'" in other.problem
    assert "no run id" in step_results(artifact).problem
