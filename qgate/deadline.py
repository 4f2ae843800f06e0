"""Wall-clock deadlines that nest: a check's ``timeout`` and the chat sandbox's render limit.

Implemented with ``SIGALRM``/``setitimer``: the exception is raised in the main thread at the
next Python bytecode, which also interrupts long loops of short native calls (llama.cpp decodes
chunk by chunk). There is one process-wide timer, so nested deadlines keep a stack and the timer
always holds the nearest one. Off the main thread, or without ``setitimer``, deadlines are not
enforced (the caller's other limits still apply).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

# (absolute expiry time, exception factory) for every active deadline, outermost first
_stack: list[tuple[float, Callable[[], BaseException]]] = []


def _available() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _arm() -> None:
    """Point the timer at the nearest active deadline (or stop it)."""
    if not _stack:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    nearest = min(expiry for expiry, _ in _stack)
    signal.setitimer(signal.ITIMER_REAL, max(nearest - time.monotonic(), 1e-4))


def _expired(signum: int, frame: object) -> None:
    now = time.monotonic()
    due = [entry for entry in _stack if entry[0] <= now + 1e-3]
    if not due:
        _arm()  # a stale alarm: the nearest deadline moved
        return
    # the outermost expired deadline wins: its handler knows the most about what to stop
    raise due[0][1]()


@contextlib.contextmanager
def deadline(seconds: float | None, error: Callable[[], BaseException]) -> Iterator[None]:
    """Raise ``error()`` in this block once ``seconds`` have passed (``None``: no limit)."""
    if seconds is None or not _available():
        yield
        return
    entry = (time.monotonic() + seconds, error)
    if not _stack:
        signal.signal(signal.SIGALRM, _expired)
    _stack.append(entry)
    _arm()
    try:
        yield
    finally:
        _stack.remove(entry)
        _arm()
