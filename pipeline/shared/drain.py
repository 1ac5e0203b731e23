"""Asking a running streaming job to drain: stop taking new input, finish what was taken, stop.

Unbounded sources started in this process (the watched folder on Prism, whose Python workers run
in the job's own process) look at the request before each poll and end their input when it is
set; the runner then closes every window and flushes every output before the job finishes. On a
cluster the runner's own drain does this (Dataflow drain, Flink stop-with-savepoint).
"""

from __future__ import annotations

import threading

_REQUESTED = threading.Event()


def request() -> None:
    _REQUESTED.set()


def requested() -> bool:
    return _REQUESTED.is_set()


def reset() -> None:
    """For a new run in the same process."""
    _REQUESTED.clear()
