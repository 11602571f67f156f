"""SIGTERM as an exception (so a job can end its MLflow run as KILLED on the way out), and a
quiet window in which the last bookkeeping cannot be interrupted by a second signal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(BaseException):
    """SIGTERM, turned into an exception."""

    signal_name = "SIGTERM"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signal.Signals(signum).name}")


def install_sigterm() -> Any:
    """Route SIGTERM to `Terminated`; returns the previous handler (None off the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        return None


def signal_name(interrupt: BaseException) -> str:
    return getattr(interrupt, "signal_name", "SIGINT")


@contextmanager
def signals_ignored() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM cannot cut the last bookkeeping of a job that is already on
    its way out (its status, its checkpoints)."""
    try:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
