"""The one pull-request comment: found again by a hidden marker and updated on every push."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qgate_github.api import DEFAULT_API_URL, GitHubAPIError, GitHubClient, Http, urllib_http
from qgate_github.summary import truncate
from qgate_github.workflow import workflow_command

#: the hidden marker that identifies qgate's pull-request comment
COMMENT_MARKER = "<!-- qgate-report -->"
#: GitHub refuses comment bodies longer than this
COMMENT_LIMIT = 65536


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
    body = truncate(
        markdown.rstrip("\n") + "\n",
        COMMENT_LIMIT - len(COMMENT_MARKER) - len(footer) - 2,
        "_Comment truncated: the full report is in the workflow run's artifacts._\n",
    )
    return f"{COMMENT_MARKER}\n{body}{footer}"


def upsert_comment(client: GitHubClient, repo: str, number: int, body: str) -> tuple[str, Any]:
    """Update qgate's previous comment on the pull request, or add one: ``(action, data)``."""
    previous = find_previous_comment(client.comments(repo, number))
    if previous is not None:
        data = client.request(
            "PATCH", f"/repos/{repo}/issues/comments/{previous['id']}", {"body": body}
        )
        return "updated", data
    return "created", client.request(
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
        action, data = upsert_comment(client, repo, number, comment_body(markdown, env))
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
