from __future__ import annotations

import time

import pytest

from qgate.deadline import deadline


class Outer(Exception):
    pass


class Inner(Exception):
    pass


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_deadline_interrupts_a_busy_loop():
    with pytest.raises(Inner), deadline(0.2, Inner):
        spin(5)


def test_an_inner_deadline_does_not_cancel_the_outer_one():
    started = time.monotonic()
    with pytest.raises(Outer), deadline(0.4, Outer):
        with deadline(0.1, Inner):
            spin(0.05)  # the inner block finishes in time
        spin(5)  # the outer deadline must still fire
    assert time.monotonic() - started < 2


def test_the_nearest_deadline_fires_first_and_none_means_no_limit():
    with pytest.raises(Inner), deadline(5, Outer), deadline(0.1, Inner):
        spin(5)
    with deadline(None, Outer):
        spin(0.05)
