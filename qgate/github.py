"""The steps of qgate's GitHub Action (``action.yml``), run as ``python -m qgate.github STEP``.

Steps, in the order the action runs them:

``run``        run ``qgate check`` / ``baseline`` / ``merge`` from the action's inputs (environment
               variables ``QGATE_*``), record its exit code as the step output ``exit-code``, and
               exit 0, so the summary, annotations and artifacts are still written when the gate
               fails. The action's last step exits with the recorded code.
``cache-key``  the key of the reference cache (``actions/cache``): OS, policy name and digest,
               the reference's sha256, and qgate's version.
``outputs``    the action's outputs: ``verdict``, ``report`` (HTML path), ``results`` (JSON path),
               ``artifact-name``.
``summary``    the Markdown summary, appended to ``$GITHUB_STEP_SUMMARY``.
``annotate``   an ``::error`` per failing result and a ``::warning`` per warning.
``comment``    post the Markdown summary as ONE pull-request comment, found again by a hidden
               marker and updated on later pushes (REST API through urllib, ``GITHUB_TOKEN``).

Everything a model says about itself (labels, metadata) is untrusted: workflow commands are
escaped, and qgate's own output is fenced with ``::stop-commands::`` so a model name cannot
inject one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qgate import __version__
from qgate.results import RunReport, Verdict

#: the hidden marker that identifies qgate's pull-request comment
COMMENT_MARKER = "<!-- qgate-report -->"
#: GitHub refuses comment bodies longer than this
COMMENT_LIMIT = 65536
#: GitHub keeps at most 1 MiB of step summary per step
SUMMARY_LIMIT = 1_000_000
#: GitHub shows at most 10 error and 10 warning annotations per step
ANNOTATION_LIMIT = 10
DEFAULT_API_URL = "https://api.github.com"

#: (method, url, headers, body) -> (status, decoded JSON body); raises GitHubAPIError
Http = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, Any]]


class GitHubAPIError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


# -- workflow commands ----------------------------------------------------------------------
def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (actions/toolkit ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: ``escape_data`` plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str) -> str:
    """``::command key=value,key=value::message`` with everything escaped."""
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def annotation_lines(report: RunReport, *, limit: int = ANNOTATION_LIMIT) -> list[str]:
    """One ``::error`` per failing or erroring result, one ``::warning`` per warning."""
    lines: list[str] = []
    left_out = {"error": 0, "warning": 0}
    emitted = {"error": 0, "warning": 0}
    for subject, result in report.results:
        if result.verdict.is_blocking:
            kind = "error"
        elif result.verdict is Verdict.WARN:
            kind = "warning"
        else:
            continue
        if emitted[kind] >= limit:
            left_out[kind] += 1
            continue
        emitted[kind] += 1
        title = f"qgate {result.verdict.value}: {subject.label}: {result.name}"
        lines.append(workflow_command(kind, result.message or result.verdict.value, title=title))
    if report.incomplete:
        lines.append(
            workflow_command(
                "error",
                "the run was interrupted or could not finish: some checks never ran",
                title="qgate: incomplete run",
            )
        )
    if any(left_out.values()):
        lines.append(
            workflow_command(
                "notice",
                f"{left_out['error']} more errors and {left_out['warning']} more warnings are in "
                "the step summary and the reports",
                title="qgate: more results",
            )
        )
    return lines


# -- step outputs and summary ---------------------------------------------------------------
def set_output(name: str, value: str, *, env: Mapping[str, str] | None = None) -> None:
    """Append ``name=value`` to ``$GITHUB_OUTPUT`` (a heredoc when the value has newlines)."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_OUTPUT")
    if not path:
        print(f"{name}={value}")  # outside Actions: show it
        return
    if "\n" in value or "\r" in value:
        delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
        text = f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
    else:
        text = f"{name}={value}\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def read_report(path: str | None) -> RunReport | None:
    """The results file, or None when it is absent or unreadable (qgate failed before it)."""
    if not path or not Path(path).is_file():
        return None
    try:
        return RunReport.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def render_markdown(report: RunReport) -> str:
    """The ``markdown`` reporter's text (through the registry, like ``qgate report``)."""
    from qgate.plugins import Registry

    reporter = Registry.from_environment().reporters.get("markdown")
    if reporter is None:
        return f"## qgate: {report.verdict.value.upper()}\n\n(the markdown reporter is not installed)\n"
    return str(reporter.item.render(report))


def summary_markdown(
    report: RunReport | None, markdown_path: str | None, exit_code: int | None
) -> str:
    """The summary: the Markdown report (written by qgate, or rendered from the results)."""
    if report is None:
        code = "unknown" if exit_code is None else str(exit_code)
        return (
            "## qgate: ERROR\n\n"
            f"qgate exited with code {code} before writing its results; the job log says why.\n"
        )
    if markdown_path and Path(markdown_path).is_file():
        text = Path(markdown_path).read_text(encoding="utf-8")
    else:
        text = render_markdown(report)
    if report.shard:
        index, count = report.shard.get("index"), report.shard.get("count")
        units, planned = report.shard.get("units") or [], report.shard.get("planned_units") or []
        text += (
            f"\n> Shard {index}/{count}: {len(units)} of {len(planned)} units of this run; "
            "the merged verdict comes from `qgate merge`.\n"
        )
    return text


def _truncate(text: str, limit: int, note: str) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(note) - 2] + "\n\n" + note


def write_summary(text: str, *, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    text = _truncate(
        text, SUMMARY_LIMIT, "_Summary truncated: the full report is in the artifacts._\n"
    )
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        print(text)
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")


def artifact_name(env: Mapping[str, str]) -> str:
    """The input ``artifact-name``, or ``qgate-report`` (``-shard-K-of-N`` for a shard)."""
    if env.get("QGATE_ARTIFACT_NAME"):
        return env["QGATE_ARTIFACT_NAME"]
    shard = env.get("QGATE_SHARD", "").strip()
    if shard and env.get("QGATE_COMMAND", "check") == "check":
        index, _, count = shard.partition("/")
        return f"qgate-report-shard-{index.strip()}-of-{count.strip()}"
    return "qgate-report"


# -- the pull-request comment ---------------------------------------------------------------
def pull_request_number(event: Mapping[str, Any], override: str | None = None) -> int | None:
    """The pull request a run is about: an explicit number, or the event payload's."""
    if override:
        return int(override)
    if isinstance(event.get("pull_request"), dict):
        return int(event["pull_request"]["number"])
    issue = event.get("issue")
    if isinstance(issue, dict) and issue.get("pull_request"):
        return int(issue["number"])
    run = event.get("workflow_run")
    if isinstance(run, dict) and run.get("pull_requests"):
        return int(run["pull_requests"][0]["number"])
    return None


def find_previous_comment(comments: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The last comment with the marker written by a bot (the workflow's token): a person's
    comment that quotes the marker is never overwritten."""
    found = None
    for comment in comments:
        user = comment.get("user") or {}
        if COMMENT_MARKER in str(comment.get("body") or "") and user.get("type") == "Bot":
            found = comment
    return found


def comment_body(markdown: str, env: Mapping[str, str]) -> str:
    """The marker, the summary, and a link to the run (within GitHub's comment limit)."""
    footer = ""
    server, repo, run_id = (
        env.get("GITHUB_SERVER_URL", "https://github.com"),
        env.get("GITHUB_REPOSITORY"),
        env.get("GITHUB_RUN_ID"),
    )
    if repo and run_id:
        footer = f"\n<sub>[Workflow run with the HTML report]({server}/{repo}/actions/runs/{run_id})</sub>\n"
    body = _truncate(
        markdown.rstrip("\n") + "\n",
        COMMENT_LIMIT - len(COMMENT_MARKER) - len(footer) - 2,
        "_Comment truncated: the full report is in the workflow run's artifacts._\n",
    )
    return f"{COMMENT_MARKER}\n{body}{footer}"


def urllib_http(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None
) -> tuple[int, Any]:
    """The default ``Http``: one request through urllib, JSON in and out."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read() or b"{}").get("message") or exc.reason
        except ValueError:
            message = exc.reason
        raise GitHubAPIError(exc.code, str(message)) from None
    except urllib.error.URLError as exc:
        raise GitHubAPIError(0, str(exc.reason)) from None


class GitHubClient:
    """The few REST calls the comment needs."""

    def __init__(self, token: str, *, api_url: str = DEFAULT_API_URL, http: Http = urllib_http):
        self.api_url = api_url.rstrip("/")
        self.http = http
        self.headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": f"qgate/{__version__}",
        }

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        headers = dict(self.headers)
        body = None
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        status, data = self.http(method, f"{self.api_url}{path}", headers, body)
        if status >= 400:
            message = data.get("message") if isinstance(data, dict) else data
            raise GitHubAPIError(status, str(message))
        return data

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(1, 51):  # 5,000 comments: far more than any pull request has
            batch = self.request(
                "GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}"
            )
            found.extend(batch or [])
            if not batch or len(batch) < 100:
                break
        return found

    def upsert_comment(self, repo: str, number: int, body: str) -> tuple[str, Any]:
        """Update qgate's previous comment on the pull request, or add one: ``(action, data)``."""
        previous = find_previous_comment(self.comments(repo, number))
        if previous is not None:
            data = self.request(
                "PATCH", f"/repos/{repo}/issues/comments/{previous['id']}", {"body": body}
            )
            return "updated", data
        return "created", self.request(
            "POST", f"/repos/{repo}/issues/{number}/comments", {"body": body}
        )


def post_comment(env: Mapping[str, str], markdown: str, *, http: Http = urllib_http) -> str:
    """Post or update the comment; returns what happened. Never fails the job: a comment that
    cannot be posted (a fork's read-only token) is a warning, the gate's verdict stands."""
    event: Mapping[str, Any] = {}
    if env.get("GITHUB_EVENT_PATH") and Path(env["GITHUB_EVENT_PATH"]).is_file():
        event = json.loads(Path(env["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8"))
    number = pull_request_number(event, env.get("QGATE_PR_NUMBER"))
    if number is None:
        return "not a pull request: no comment posted"
    repo, token = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_TOKEN")
    if not repo or not token:
        return workflow_command(
            "warning", "no GITHUB_REPOSITORY or github-token: the pull-request comment was skipped"
        )
    client = GitHubClient(token, api_url=env.get("GITHUB_API_URL") or DEFAULT_API_URL, http=http)
    try:
        action, data = client.upsert_comment(repo, number, comment_body(markdown, env))
    except GitHubAPIError as exc:
        hint = (
            " (a pull request from a fork gets a read-only token: post the comment from a "
            "workflow_run workflow, see docs/ci.md)"
            if exc.status in (401, 403, 404)
            else ""
        )
        return workflow_command(
            "warning", f"could not post the pull-request comment: {exc}{hint}", title="qgate"
        )
    url = data.get("html_url", "") if isinstance(data, dict) else ""
    return f"{action} the qgate comment on pull request #{number} {url}".rstrip()


# -- running qgate --------------------------------------------------------------------------
class InputError(Exception):
    """An action input is wrong (e.g. a glob matches nothing): exit code 2, like qgate's."""


_GLOB = re.compile(r"[*?\[]")


def expand(patterns: str, *, what: str) -> list[str]:
    """Globs separated by spaces or newlines -> paths; a glob matching nothing is an error."""
    found: list[str] = []
    for pattern in patterns.split():
        if _GLOB.search(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise InputError(f"no {what} matches {pattern!r}")
            found.extend(m for m in matches if m not in found)
        elif pattern not in found:
            found.append(pattern)
    return found


def qgate_arguments(env: Mapping[str, str]) -> list[str]:
    """The ``qgate`` command line for the action's inputs."""
    command = env.get("QGATE_COMMAND", "check").strip() or "check"
    policy = env.get("QGATE_POLICY", "").strip() or "production"
    reference = env.get("QGATE_REFERENCE", "").strip()
    cache_dir = env.get("QGATE_CACHE_DIR", "").strip()
    extra = shlex.split(env.get("QGATE_ARGS", ""))
    reports = [
        arg
        for name in ("junit", "html", "json", "markdown")
        if env.get(f"QGATE_{name.upper()}", "").strip()
        for arg in (f"--{name}", env[f"QGATE_{name.upper()}"].strip())
    ]
    if command == "check":
        models = expand(env.get("QGATE_MODELS", ""), what="model")
        if not models:
            raise InputError("the models input is empty: name the quants to check")
        args = ["check", *models, "--policy", policy]
        if reference:
            args += ["--reference", reference]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        if env.get("QGATE_SHARD", "").strip():
            args += ["--shard", env["QGATE_SHARD"].strip()]
        return [*args, *reports, *extra]
    if command == "baseline":
        if not reference:
            raise InputError("command baseline needs the reference input")
        args = ["baseline", reference, "--policy", policy]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        return [*args, *extra]
    if command == "merge":
        files = expand(env.get("QGATE_RESULTS", ""), what="results file")
        if not files:
            raise InputError("the results input is empty: name the shards' results files")
        return ["merge", *files, *reports, *extra]
    raise InputError(f"unknown command {command!r}: use check, baseline or merge")


def run_qgate(env: Mapping[str, str]) -> int:
    """Run qgate for the inputs; its output fenced so that nothing it prints (a model's name
    included) is taken as a workflow command. Returns qgate's exit code."""
    try:
        args = qgate_arguments(env)
    except InputError as exc:
        print(workflow_command("error", str(exc), title="qgate: invalid input"))
        return 2
    token = secrets.token_hex(16)
    print(f"::stop-commands::{token}", flush=True)
    try:
        print(f"$ qgate {shlex.join(args)}", flush=True)  # file names are untrusted too
        code = subprocess.call([sys.executable, "-m", "qgate", *args])
    finally:
        print(f"::{token}::", flush=True)
    return code


def cache_key(env: Mapping[str, str]) -> str:
    """``qgate-ref-<os>-<policy>-<policy digest>-<reference sha256>-qgate<version>``, or ""
    without a reference. The cached entries are content-addressed anyway: the key decides only
    what is restored, never what is trusted."""
    from qgate.datasets import load_dataset
    from qgate.hashing import DigestIndex
    from qgate.plugins import Registry
    from qgate.policy import load_policy
    from qgate.shard import policy_digest

    reference = env.get("QGATE_REFERENCE", "").strip()
    if not reference:
        return ""
    registry = Registry.from_environment()
    policy = load_policy(
        env.get("QGATE_POLICY", "").strip() or "production",
        registry.check_objects(),
        extra_dirs=registry.policy_dirs,
    )
    digest = policy_digest(policy, policy.backend, [load_dataset(d) for d in policy.datasets])
    ref = DigestIndex(None).digest(Path(reference))
    system = env.get("RUNNER_OS") or platform.system()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", policy.name)
    return f"qgate-ref-{system}-{name}-{digest[:12]}-{ref[:16]}-qgate{__version__}"


# -- the command line -----------------------------------------------------------------------
def _exit_code(env: Mapping[str, str]) -> int | None:
    value = env.get("QGATE_EXIT_CODE", "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    parser = argparse.ArgumentParser(
        prog="python -m qgate.github", description="Steps of qgate's GitHub Action."
    )
    parser.add_argument(
        "step", choices=["run", "cache-key", "outputs", "summary", "annotate", "comment"]
    )
    step = parser.parse_args(argv).step
    results = env.get("QGATE_JSON", "").strip() or None
    if step == "run":
        set_output("exit-code", str(run_qgate(env)), env=env)
        return 0
    if step == "cache-key":
        try:
            set_output("key", cache_key(env), env=env)
        except Exception as exc:  # no key means no cache: slower, never wrong
            print(workflow_command("warning", f"no reference cache: {exc}", title="qgate"))
            set_output("key", "", env=env)
        return 0
    report = read_report(results)
    if step == "outputs":
        verdict = report.verdict.value if report is not None else "error"
        html = env.get("QGATE_HTML", "").strip()
        set_output("verdict", verdict, env=env)
        set_output("report", html if html and Path(html).is_file() else "", env=env)
        set_output("results", results if report is not None and results else "", env=env)
        set_output("artifact-name", artifact_name(env), env=env)
        return 0
    if step == "annotate":
        if report is None:
            code = _exit_code(env)
            if code:
                print(
                    workflow_command(
                        "error",
                        f"qgate exited with code {code} before writing results; see the log",
                        title="qgate",
                    )
                )
            return 0
        for line in annotation_lines(report):
            print(line)
        return 0
    markdown = summary_markdown(report, env.get("QGATE_MARKDOWN", "").strip(), _exit_code(env))
    if step == "summary":
        write_summary(markdown, env=env)
        return 0
    print(post_comment(env, markdown))  # step == "comment"
    return 0


if __name__ == "__main__":
    sys.exit(main())
