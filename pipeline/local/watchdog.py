"""The worker watchdog: a batch run whose worker process died ends at once instead of waiting on it."""

from __future__ import annotations

import os
import threading


def worker_processes(root: int) -> set[int]:
    """Live descendants of process `root` that are Beam Python SDK workers (not the shells that
    start them), found through /proc; empty where there is no /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"apache_beam.runners.worker.sdk_worker_main" in args and not args[0].endswith(b"sh"):
                found.add(child)
    return found


class WorkerWatchdog:
    """Ends a run whose worker process died instead of letting the runner wait on it.

    With --direct_running_mode=multi_processing the FnApiRunner's workers are child processes
    (`sdk_worker_main`); when one is killed the runner can wait minutes for it. The watchdog looks
    at them twice a second; when one has gone and the job has not finished `grace` seconds later,
    it calls `on_lost` (which must not return: it abandons the output and exits).
    """

    def __init__(self, on_lost, grace: float = 10.0, interval: float = 0.5):
        self._on_lost = on_lost
        self._grace = grace
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="riskpipe-worker-watchdog", daemon=True)

    def __enter__(self) -> WorkerWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        seen: set[int] = set()
        while not self._done.wait(self._interval):
            alive = worker_processes(os.getpid())
            lost = seen - alive
            seen |= alive
            if lost and not self._done.wait(self._grace):
                self._on_lost(sorted(lost))
                return
