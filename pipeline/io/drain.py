"""Asking a running streaming job to drain: stop taking new input, finish what was taken, stop.

Unbounded sources started in this process (the watched folder on Prism, whose Python workers run
in the job's own process) look at the request before each poll and end their input when it is
set; sources that run elsewhere (KafkaIO in its Java worker) are told by the callbacks registered
with `on_request`. The runner then closes every window and flushes every output before the job
finishes. On a cluster the runner's own drain does this (Dataflow drain, Flink
stop-with-savepoint).

Sources whose records arrive in this process also mark each bundle (`saw_input`), so that the
runner can stop a job that has had no input for a while (streaming.stop_after_idle_seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_REQUESTED = threading.Event()
_CALLBACKS: list[Callable[[], None]] = []
_LAST_INPUT = [time.monotonic()]
_REASON = [""]


def request(reason: str = "drain") -> None:
    """Asks for a drain; `reason` (drain: a person asked; idle: no input for a while) is kept."""
    if not _REQUESTED.is_set():
        _REASON[0] = reason
    _REQUESTED.set()
    for callback in list(_CALLBACKS):
        callback()


def requested() -> bool:
    return _REQUESTED.is_set()


def reason() -> str:
    """Why the drain was requested; empty when it was not."""
    return _REASON[0] if requested() else ""


def on_request(callback: Callable[[], None]) -> None:
    """Calls `callback` when a drain is requested (at once if it already was)."""
    _CALLBACKS.append(callback)
    if requested():
        callback()


def saw_input() -> None:
    _LAST_INPUT[0] = time.monotonic()


def idle_for() -> float:
    """Seconds since a source last marked input (or since the run began)."""
    return time.monotonic() - _LAST_INPUT[0]


def reset() -> None:
    """For a new run in the same process."""
    _REQUESTED.clear()
    _REASON[0] = ""
    _CALLBACKS.clear()
    _LAST_INPUT[0] = time.monotonic()
