"""The steps of qgate's GitHub Action (``action.yml``), run as ``python -m qgate.github STEP``.

Steps, in the order the action runs them:

``cache-key``  the key of the reference cache (``actions/cache``): OS, policy name and digest,
               the reference's sha256, and qgate's version; and its directory (outside the
               workspace unless the ``cache-dir`` input says otherwise).
``run``        run ``qgate check`` / ``baseline`` / ``merge`` from the action's inputs (environment
               variables ``QGATE_*``) into a fresh directory, copy the reports to the output paths
               (after removing whatever stale files were there), and record the step outputs
               ``exit-code``, ``run-id`` and ``invocation-id``. It exits 0, so the summary,
               annotations and artifacts are still written when the gate fails; the action's last
               step exits with the recorded code.
``outputs``    the action's outputs: ``verdict``, ``report`` (HTML path), ``results`` (JSON path),
               ``artifact-name``.
``summary``    the Markdown summary, appended to ``$GITHUB_STEP_SUMMARY``.
``annotate``   an ``::error`` per failing result and a ``::warning`` per warning.
``comment``    post the Markdown summary as ONE pull-request comment, found again by a hidden
               marker and updated on later pushes (REST API through urllib, ``GITHUB_TOKEN``).

The steps after ``run`` report only results that this step's qgate wrote: the file at the ``json``
path must carry the run id and the invocation id that ``run`` recorded, and its verdicts must
agree with its numbers (:func:`qgate.integrity.read_results`). A missing, stale, foreign or
edited file is an ``error`` verdict whose reason the summary and the annotation show.

Everything a model says about itself (labels, metadata, messages) is untrusted: workflow commands
are escaped, qgate's own output is fenced with ``::stop-commands::`` so a model name cannot inject
one, and in the step summary and the comment it can neither mention anyone, nor link, nor reverse
text (:func:`neutralise`).
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgate import __version__
from qgate.errors import UsageError
from qgate.integrity import read_results
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


# -- results this step can trust -------------------------------------------------------------
@dataclass(frozen=True)
class StepResults:
    """The results a step may report, or why there are none it can trust."""

    report: RunReport | None
    #: why ``report`` is None, shown in the summary, the annotation and the log
    problem: str = ""
    #: the exit code a zero exit becomes when there are no trustworthy results: 3 (qgate wrote
    #: nothing, or something it should not have), 2 (the inputs were another run's results)
    exit_code: int = 3


def load_results(
    path: str | None, *, run_id: str, invocation_id: str, require_invocation: bool = False
) -> StepResults:
    """The results file at ``path`` if it is this run's and its verdicts hold.

    ``invocation_id`` (when given) names the one qgate process whose file this is: anything else at
    the path is stale (an earlier run, a file committed by the pull request) or a copy. ``run_id``
    (when given) names the run. With neither, a stale file could not be told from a fresh one, so
    nothing is trusted. The verdicts are recomputed from the numbers (:func:`read_results`).
    """
    if require_invocation and not invocation_id:
        return StepResults(None, "qgate wrote no results in this step (the log says why)")
    if not run_id and not invocation_id:
        return StepResults(
            None,
            "no run id to check the results file against (QGATE_RUN_ID): a stale or copied "
            "file could not be told from this run's",
        )
    if not path or not Path(path).is_file():
        return StepResults(None, f"qgate wrote no results file ({path or 'no json path'})")
    try:
        report = read_results(Path(path))
    except UsageError as exc:
        return StepResults(None, f"the results file was refused: {exc}")
    if invocation_id and report.invocation_id != invocation_id:
        return StepResults(
            None,
            f"{path} was written by another qgate process (invocation "
            f"{report.invocation_id or 'none'}, not this step's {invocation_id}): a stale, "
            "committed or copied file is never reported",
        )
    if run_id and report.run_id != run_id:
        return StepResults(
            None,
            f"{path} belongs to run {report.run_id or '(none)'!r}, not to this run "
            f"{run_id!r}: results of another run are never reported as this run's",
            exit_code=2,
        )
    return StepResults(report)


def step_results(env: Mapping[str, str]) -> StepResults:
    """The results for the steps after ``run``: the file that step wrote (``QGATE_STEP_RESULTS``,
    outside the workspace) or the ``json`` path, checked against the ids ``run`` recorded."""
    return load_results(
        env.get("QGATE_STEP_RESULTS", "").strip() or env.get("QGATE_JSON", "").strip() or None,
        run_id=env.get("QGATE_RUN_ID", "").strip(),
        invocation_id=env.get("QGATE_INVOCATION_ID", "").strip(),
        require_invocation=env.get("QGATE_EXPECT_INVOCATION", "").strip() == "true",
    )


# -- untrusted text in Markdown ---------------------------------------------------------------
#: bidirectional controls: they display text in another order than it is stored (Trojan Source)
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: a zero-width space: breaks what GitHub would turn into a mention or a link, invisibly
_ZWSP = "\u200b"
#: what GitHub links or notifies from plain text: ``www.`` autolinks, issue references
_WWW = re.compile(r"(?i)\b(www)\.")
_ISSUE = re.compile(r"(?i)(#|\bgh-)(?=\d)")
#: Markdown punctuation escaped with a backslash (``<``, ``>``, ``&`` become entities instead)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")


def neutralise(text: str) -> str:
    """``text`` that cannot mention anyone (``@name``, an e-mail autolink), autolink a URL
    (``https://``, ``www.``), reference an issue (``#12``), or reverse the text around it.

    For text that came from the results (a model's label and metadata, a check's message): GitHub
    notifies whoever a comment mentions and links whatever looks like a URL, so a model named
    ``@org/team`` would page a team. A zero-width space keeps the text readable; the Markdown
    syntax itself (links, images, HTML) is escaped by the reporter or :func:`md_text`.
    """
    text = _BIDI.sub("", text)
    text = text.replace("@", "@" + _ZWSP).replace("://", ":" + _ZWSP + "//")
    text = _WWW.sub(lambda m: m.group(1) + _ZWSP + ".", text)
    return _ISSUE.sub(lambda m: m.group(1) + _ZWSP, text)


def neutralise_report(report: RunReport) -> RunReport:
    """A copy of ``report`` with every string neutralised, for display only (verdicts and
    numbers are untouched; the copy is never written)."""
    return RunReport.from_dict(_neutralise_data(report.to_dict()))


def _neutralise_data(data: Any) -> Any:
    if isinstance(data, str):
        return neutralise(data)
    if isinstance(data, dict):
        return {
            neutralise(k) if isinstance(k, str) else k: _neutralise_data(v) for k, v in data.items()
        }
    if isinstance(data, list):
        return [_neutralise_data(v) for v in data]
    return data


def md_text(value: object) -> str:
    """Untrusted ``value`` as one line of Markdown text: neutralised, punctuation escaped."""
    one_line = " ".join(str(value).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", neutralise(one_line)), quote=False)


def render_markdown(report: RunReport) -> str:
    """The ``markdown`` reporter's text (through the registry, like ``qgate report``)."""
    from qgate.plugins import Registry

    reporter = Registry.from_environment().reporters.get("markdown")
    if reporter is None:
        return f"## qgate: {report.verdict.value.upper()}\n\n(the markdown reporter is not installed)\n"
    return str(reporter.item.render(report))


def summary_markdown(results: StepResults, exit_code: int | None) -> str:
    """The summary: the Markdown report rendered from the checked results (never a Markdown
    file found on disk, which may be stale), with what the model said neutralised."""
    report = results.report
    if report is None:
        code = "unknown" if exit_code is None else str(exit_code)
        return (
            "## qgate: ERROR\n\n"
            f"No results this step can trust: {md_text(results.problem)}\n\n"
            f"qgate exited with code {code}; the job log says why.\n"
        )
    text = render_markdown(neutralise_report(report))
    if report.shard:
        text += shard_note(report.shard)
    return text


def shard_note(shard: Mapping[str, Any]) -> str:
    """The note under a shard's summary. The shard record comes from the results file, so every
    value in it is printed as escaped text or a count, never as Markdown."""
    units, planned = shard.get("units"), shard.get("planned_units")
    done = len(units) if isinstance(units, list) else 0
    total = len(planned) if isinstance(planned, list) else 0
    return (
        f"\n> Shard {_number(shard.get('index'))}/{_number(shard.get('count'))}: {done} of "
        f"{total} units of this run; the merged verdict comes from `qgate merge`.\n"
    )


def _number(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return md_text(value)


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


#: the reports the action writes, by input name, and their file names in the step's directory
REPORTS = {
    "junit": "junit.xml",
    "html": "report.html",
    "json": "results.json",
    "markdown": "summary.md",
}


def qgate_arguments(
    env: Mapping[str, str], *, reports: Mapping[str, str | Path] | None = None, run_id: str = ""
) -> list[str]:
    """The ``qgate`` command line for the action's inputs.

    ``reports`` maps report names to the paths qgate writes (default: the inputs' paths). File
    names from the inputs and their globs come last, after ``--``: a file named ``--n-ctx=16``
    is a file, not an option.
    """
    command = env.get("QGATE_COMMAND", "check").strip() or "check"
    policy = env.get("QGATE_POLICY", "").strip() or "production"
    reference = env.get("QGATE_REFERENCE", "").strip()
    cache_dir = env.get("QGATE_CACHE_DIR", "").strip()
    extra = shlex.split(env.get("QGATE_ARGS", ""))
    if reports is None:
        reports = {
            name: env[f"QGATE_{name.upper()}"].strip()
            for name in REPORTS
            if env.get(f"QGATE_{name.upper()}", "").strip()
        }
    report_args = [arg for name, path in reports.items() for arg in (f"--{name}", str(path))]
    if command == "check":
        models = expand(env.get("QGATE_MODELS", ""), what="model")
        if not models:
            raise InputError("the models input is empty: name the quants to check")
        args = ["check", "--policy", policy]
        if reference:
            args += ["--reference", reference]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        if env.get("QGATE_SHARD", "").strip():
            args += ["--shard", env["QGATE_SHARD"].strip()]
        if run_id:
            args += ["--run-id", run_id]
        return [*args, *report_args, *extra, "--", *models]
    if command == "baseline":
        if not reference:
            raise InputError("command baseline needs the reference input")
        args = ["baseline", "--policy", policy]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        return [*args, *extra, "--", reference]
    if command == "merge":
        files = expand(env.get("QGATE_RESULTS", ""), what="results file")
        if not files:
            raise InputError("the results input is empty: name the shards' results files")
        return ["merge", *report_args, *extra, "--", *files]
    raise InputError(f"unknown command {command!r}: use check, baseline or merge")


def run_qgate(args: Sequence[str]) -> int:
    """Run ``qgate ARGS``, its output fenced so that nothing it prints (a model's name included)
    is taken as a workflow command. Returns qgate's exit code."""
    token = secrets.token_hex(16)
    print(f"::stop-commands::{token}", flush=True)
    try:
        print(f"$ qgate {shlex.join(args)}", flush=True)  # file names are untrusted too
        code = subprocess.call([sys.executable, "-m", "qgate", *args])
    finally:
        print(f"::{token}::", flush=True)
    return code


def step_run_id(env: Mapping[str, str]) -> str:
    """The run id this step gives qgate and checks the results against: the ``run-id`` input,
    else the workflow run's (``github-run-<GITHUB_RUN_ID>``), else a random one.

    Every job of a workflow run gets the same one, so the shards of a matrix and the merge job
    agree without being told, also after a re-run of the failed jobs (which keeps the run id and
    only bumps the attempt). The step's own results are told apart by their invocation id.
    """
    given = env.get("QGATE_RUN_ID", "").strip()
    if given:
        return given
    if env.get("GITHUB_RUN_ID", "").strip():
        return f"github-run-{env['GITHUB_RUN_ID'].strip()}"
    return f"local-{secrets.token_hex(8)}"


def output_paths(env: Mapping[str, str]) -> dict[str, Path]:
    """The reports' paths the inputs name (``junit``, ``html``, ``json``, ``markdown``)."""
    return {
        name: Path(env[f"QGATE_{name.upper()}"].strip())
        for name in REPORTS
        if env.get(f"QGATE_{name.upper()}", "").strip()
    }


def clear_stale(paths: Sequence[Path]) -> None:
    """Remove the files at the output paths before qgate runs: a report left there (committed by
    the pull request, or written by an earlier step) must not be uploaded or read as this run's.
    A symlink is removed, never followed."""
    for path in paths:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            raise InputError(f"the report path {path} exists and is not a file")


def fresh_directory(env: Mapping[str, str]) -> Path:
    """A new, empty directory for this step's reports, outside the workspace (``$RUNNER_TEMP``),
    so no file the pull request put there can be taken for one qgate wrote."""
    base = env.get("RUNNER_TEMP", "").strip() or None
    return Path(tempfile.mkdtemp(prefix="qgate-run-", dir=base))


def copy_reports(written: Mapping[str, Path], targets: Mapping[str, Path]) -> list[str]:
    """Copy the reports qgate wrote to the inputs' paths; returns what could not be copied."""
    failures = []
    for name, target in targets.items():
        source = written.get(name)
        if source is None or not source.is_file():
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        except OSError as exc:
            failures.append(f"{name} report to {target}: {exc.strerror or exc}")
    return failures


@dataclass(frozen=True)
class RunOutcome:
    """What the ``run`` step records: the exit code the gate ends with, the run id, and the
    identity and place of the results this step's qgate wrote."""

    exit_code: int
    run_id: str
    invocation_id: str = ""
    results_file: str = ""


def run_step(env: Mapping[str, str]) -> RunOutcome:
    """Run qgate for the inputs into a fresh directory and copy its reports to the inputs' paths.

    The exit code is 0 only when the step holds results that qgate wrote in this step, for this
    run, whose verdicts agree with their numbers: a zero exit without them becomes an error.
    """
    command = env.get("QGATE_COMMAND", "check").strip() or "check"
    run_id = step_run_id(env)
    try:
        targets = output_paths(env)
        clear_stale(list(targets.values()))
        fresh = fresh_directory(env)
        # the JSON results always: the steps after this one read them, whatever the inputs say
        written = {name: fresh / REPORTS[name] for name in REPORTS if name in targets}
        written["json"] = fresh / REPORTS["json"]
        args = qgate_arguments(env, reports=written, run_id=run_id)
    except InputError as exc:
        print(workflow_command("error", str(exc), title="qgate: invalid input"))
        return RunOutcome(2, run_id)
    code = run_qgate(args)
    failures = copy_reports(written, targets)
    for failure in failures:
        print(workflow_command("error", f"could not copy the {failure}", title="qgate"))
    if command == "baseline":
        return RunOutcome(code, run_id)
    results = load_results(str(written["json"]), run_id=run_id, invocation_id="")
    if results.report is None or failures:
        problem = results.problem or "the reports could not be copied to their paths"
        print(workflow_command("error", problem, title="qgate: no results to report"))
        return RunOutcome(code or results.exit_code, run_id)
    return RunOutcome(code, run_id, results.report.invocation_id, str(written["json"]))


def cache_directory(env: Mapping[str, str]) -> str:
    """The reference cache directory: the ``cache-dir`` input, else ``qgate-cache`` under
    ``$RUNNER_TEMP``, outside the workspace, which a pull request can write."""
    given = env.get("QGATE_CACHE_DIR", "").strip()
    if given:
        workspace = env.get("GITHUB_WORKSPACE", "").strip()
        if workspace and _inside(Path(given), Path(workspace)):
            print(
                workflow_command(
                    "warning",
                    f"the reference cache directory {given} is inside the workspace, which the "
                    "pull request under test can write: leave cache-dir empty to keep it outside",
                    title="qgate",
                )
            )
        return given
    return str(Path(env.get("RUNNER_TEMP", "").strip() or tempfile.gettempdir()) / "qgate-cache")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


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
    if step == "run":
        outcome = run_step(env)
        set_output("exit-code", str(outcome.exit_code), env=env)
        set_output("run-id", outcome.run_id, env=env)
        set_output("invocation-id", outcome.invocation_id, env=env)
        set_output("results-file", outcome.results_file, env=env)
        return 0
    if step == "cache-key":
        directory = cache_directory(env)
        set_output("dir", directory, env=env)
        try:
            set_output("key", cache_key({**env, "QGATE_CACHE_DIR": directory}), env=env)
        except Exception as exc:  # no key means no cache: slower, never wrong
            print(workflow_command("warning", f"no reference cache: {exc}", title="qgate"))
            set_output("key", "", env=env)
        return 0
    results = step_results(env)
    if step == "outputs":
        return _outputs_step(results, env)
    if step == "annotate":
        return _annotate_step(results)
    markdown = summary_markdown(results, _exit_code(env))
    if step == "summary":
        write_summary(markdown, env=env)
        return 0
    print(post_comment(env, markdown))  # step == "comment"
    return 0


def _outputs_step(results: StepResults, env: Mapping[str, str]) -> int:
    report = results.report
    json_path = env.get("QGATE_JSON", "").strip()
    html_path = env.get("QGATE_HTML", "").strip()
    written = report is not None
    set_output("verdict", report.verdict.value if report is not None else "error", env=env)
    set_output("report", html_path if written and Path(html_path).is_file() else "", env=env)
    set_output("results", json_path if written and Path(json_path).is_file() else "", env=env)
    set_output("artifact-name", artifact_name(env), env=env)
    return 0


def _annotate_step(results: StepResults) -> int:
    if results.report is None:
        message = f"no results this step can trust: {results.problem}"
        print(workflow_command("error", neutralise(message), title="qgate: error"))
        return 0
    for line in annotation_lines(neutralise_report(results.report)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
