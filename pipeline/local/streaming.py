"""While a streaming job runs here: the summary refreshed, Ctrl-C drains, an idle source stops it."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from pipeline.io import drain
from pipeline.shared.periodic import Every
from pipeline.summary import live_summary


class StreamingWatch:
    """While a streaming job runs: summary.json refreshed every `interval` seconds, and Ctrl-C asks
    the job to drain (a second Ctrl-C stops at once, losing what is in flight)."""

    def __init__(self, result: Any, interval: float, write, idle_seconds: float = 0.0, pending=None, counted_here=None):
        self._result = result
        self._counted_here = counted_here  # () -> the workers' live tally (Prism), or None: the runner's metrics
        self._write = write
        self._idle = idle_seconds
        self._pending = pending  # () -> records waiting at the source (-1: unknown); None: not asked
        self._done = threading.Event()
        self._refreshes = Every(interval, self._refresh, "riskpipe-summary")
        self._idle_thread = threading.Thread(target=self._stop_when_idle, name="riskpipe-idle", daemon=True)
        self._previous: Any = None

    def __enter__(self) -> StreamingWatch:
        self._refreshes.start()
        if self._idle:
            self._idle_thread.start()
        if in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._refreshes.stop()  # a refresh in flight must not outlive the run (nor overwrite its summary)
        if self._idle_thread.is_alive():
            self._idle_thread.join()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupted(self, signum: int, frame: Any) -> None:
        if drain.requested():
            raise KeyboardInterrupt
        drain.request()
        print(
            "draining: no new input is taken; the job stops once every record read is written "
            "(Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )

    def _stop_when_idle(self) -> None:
        """Drains the job once no record has come for the idle time and none waits at the source
        (a busy job with a backlog is not idle)."""
        while not self._done.wait(1.0):
            if drain.requested():
                return
            if self._pending is not None and self._pending() != 0:
                drain.saw_input()
            elif drain.idle_for() >= self._idle:
                drain.request("idle")
                return

    def _refresh(self) -> None:
        summary = live_summary(self._result, self._counted_here)
        if summary is not None:
            summary["running"] = True
            self._write(summary)


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
