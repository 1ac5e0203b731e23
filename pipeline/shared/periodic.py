"""A function called every few seconds on a thread of its own while something runs: the job's
offset commits, progress line and summary refresh, and the benchmarks' samplers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

_LOG = logging.getLogger(__name__)


class Every:
    """Calls `tick` every `interval` seconds on a daemon thread, from start() until stop(); the
    first call is one interval after start(). stop() returns once a call in flight has ended, so
    nothing the thread does outlives it. A call that raises is logged and the next one is made as
    usual: one failed refresh or commit does not end the ones after it."""

    def __init__(self, interval: float, tick: Callable[[], object], name: str):
        self._interval = interval
        self._tick = tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - whatever a call raises is logged; the thread goes on
                _LOG.exception("%s: this call failed; the next one is in %g s", self._thread.name, self._interval)
