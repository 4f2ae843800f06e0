"""The options ``qgate check`` and ``qgate baseline`` share, written once.

They describe the run both commands set up (:class:`~qgate.setup.RunSetup`): a baseline is only
found by the checks when it was computed with the same policy, text and backend options, so the
two commands must offer the same options with the same meaning. :func:`run_options` adds them and
hands the command one :class:`~qgate.setup.RunRequest` instead of nine loose arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from qgate.setup import RunRequest

_Command = TypeVar("_Command", bound=Callable[..., Any])

#: the keyword arguments the options below give, gathered into the request
_REQUEST_FIELDS = (
    "policy",
    "datasets",
    "backend",
    "n_ctx",
    "threads",
    "gpu_layers",
    "kv_cache",
    "cache_dir",
    "quiet",
)


def _options(*, policy_help: str, backend_help: str) -> list[Callable[[Any], Any]]:
    return [
        click.option(
            "--policy", "-p", "policy", default="production", show_default=True, help=policy_help
        ),
        click.option("--backend", "-b", help=backend_help),
        click.option(
            "--dataset",
            "datasets",
            multiple=True,
            metavar="[DOMAIN=]FILE",
            help="extra evaluation text (.txt or .jsonl with a 'text' field); repeatable",
        ),
        click.option(
            "--n-ctx", type=click.IntRange(16), help="context size (overrides the policy)"
        ),
        click.option(
            "--threads", type=click.IntRange(1), help="CPU threads (overrides the policy)"
        ),
        click.option("--gpu-layers", type=click.IntRange(-1), help="layers offloaded to the GPU"),
        click.option(
            "--kv-cache", help="KV cache type, e.g. f16, q8_0, q4_0 (overrides the policy)"
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="reference cache directory [default: $QGATE_CACHE_DIR or ~/.cache/qgate]",
        ),
        click.option("--quiet", "-q", is_flag=True, help="no progress output on stderr"),
    ]


def run_options(*, policy_help: str, backend_help: str) -> Callable[[_Command], _Command]:
    """Add the shared options to a command, which receives them as ``request: RunRequest``.

    Only ``--policy`` and ``--backend`` say something different per command (which models the
    backend opens, what the policy is used for); the rest are the same options.
    """

    def decorate(command: _Command) -> _Command:
        @functools.wraps(command)
        def with_request(*args: Any, **kwargs: Any) -> Any:
            request = RunRequest(**{name: kwargs.pop(name) for name in _REQUEST_FIELDS})
            return command(*args, request=request, **kwargs)

        decorated: Any = with_request
        for option in reversed(_options(policy_help=policy_help, backend_help=backend_help)):
            decorated = option(decorated)
        return decorated

    return decorate
