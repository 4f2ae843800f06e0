"""The few GitHub REST calls qgate makes, through urllib: no client library to install."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from qgate import __version__

DEFAULT_API_URL = "https://api.github.com"

#: (method, url, headers, body) -> (status, decoded JSON body); raises GitHubAPIError
Http = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, Any]]


class GitHubAPIError(Exception):
    """A REST call that failed, with its HTTP status (0 when no answer came)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


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
        """Every comment on issue or pull request ``number``, page by page."""
        found: list[dict[str, Any]] = []
        for page in range(1, 51):  # 5,000 comments: far more than any pull request has
            batch = self.request(
                "GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}"
            )
            found.extend(batch or [])
            if not batch or len(batch) < 100:
                break
        return found
