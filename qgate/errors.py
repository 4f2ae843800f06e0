"""Exit codes and the exceptions qgate shows to people.

A :class:`QgateError` is an expected failure caused by the input (a bad policy, a model file that
is not a model, a missing extra): the CLI prints its message without a traceback and exits with
its :attr:`exit_code`. Any other exception is a bug in qgate or in a plugin.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The process exit status of ``qgate``."""

    #: every gate passed (warnings allowed)
    OK = 0
    #: at least one fail-severity check failed or errored
    GATE_FAILED = 1
    #: the command line, a policy or an input file was wrong; nothing was judged
    USAGE_ERROR = 2
    #: qgate itself broke, or the run was interrupted; partial results are marked incomplete
    INTERNAL_ERROR = 3


class QgateError(Exception):
    """Base class for errors meant for people, printed without a traceback."""

    exit_code: ExitCode = ExitCode.USAGE_ERROR


class UsageError(QgateError):
    """The command line or the environment asks for something that cannot be done."""


class PolicyError(UsageError):
    """A policy file is invalid. The message names the file, the key path and what was expected."""

    def __init__(self, message: str, *, source: str | None = None, key_path: str | None = None):
        self.source = source
        self.key_path = key_path
        where = ": ".join(part for part in (source, key_path) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(UsageError):
    """Plugins conflict or are malformed (two plugins registering one name, a bad hook result)."""


class BackendError(QgateError):
    """A model could not be opened, loaded or run. The message says which file and why."""


class UnsupportedKVCache(BackendError):
    """The backend cannot run the requested KV cache type (a check may skip that type)."""


class MissingExtraError(BackendError):
    """A backend needs an optional dependency that is not installed."""

    def __init__(self, backend: str, extra: str, module: str):
        super().__init__(
            f"the {backend!r} backend needs the Python package {module!r}, which is not "
            f"installed: pip install 'qgate-llm[{extra}]'"
        )


class InternalError(QgateError):
    """qgate or a plugin broke in a way that leaves no trustworthy verdict (exit 3)."""

    exit_code = ExitCode.INTERNAL_ERROR


class CheckError(QgateError):
    """A check could not produce a measurement (e.g. NaN logits). Becomes an ``error`` result."""
