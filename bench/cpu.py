"""CPU time by process while a benchmark runs, read from /proc (Linux): what each part of a run
(the job's Python, Prism, the Java worker and expansion service, the Kafka broker) cost.

A sampler thread lists /proc every `interval` seconds and keeps, for each process whose command
line a component matches, the CPU time (user + system) last seen, under the component its command
line matched last (a child forked from the job has the job's command line until it runs its own
program); a process already running when the sampler starts counts from what it had then. CPU
spent in the last interval before a process exits is not seen (at most `interval` of one core per
process).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pipeline.shared.periodic import Every

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Matcher = Callable[[str], bool]


def _command_line(pid: str) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode("utf-8", "replace")


def _cpu_seconds(pid: str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def job_components(config_path: str, broker_state: str | None = None) -> dict[str, Matcher]:
    """The processes of a job started with `--config config_path` (and of a broker whose state is
    under `broker_state`), by name, in the order they are matched."""
    components: dict[str, Matcher] = {
        "job (Python)": lambda c: "pipeline.runner" in c and config_path in c,
        "Prism": lambda c: "prism" in c and "--job_port" in c,
        "Java worker (KafkaIO)": lambda c: "ExternalWorkerService" in c,
        "Java expansion service": lambda c: "ExpansionService" in c,
    }
    if broker_state:
        components["Kafka broker"] = broker_matcher(broker_state)
    return components


def broker_matcher(broker_state: str) -> Matcher:
    return lambda c: "kafka.Kafka" in c and broker_state in c


class CpuSampler:
    """with CpuSampler(components) as cpu: ...; then cpu.seconds: CPU seconds by component."""

    def __init__(self, components: dict[str, Matcher], interval: float = 0.25):
        self._components = components
        self._baseline: dict[str, float] = {}
        self._last: dict[str, tuple[str, float]] = {}  # pid -> (component, CPU seconds)
        self._ticks = Every(interval, self._sample, "cpu-sampler")
        self.seconds: dict[str, float] = {}

    def _component(self, pid: str) -> str | None:
        try:
            command = _command_line(pid)
        except OSError:
            return None
        return next((name for name, matches in self._components.items() if matches(command)), None)

    def _sample(self, first: bool = False) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            name = self._component(pid)
            if name is None:
                continue
            try:
                used = _cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                continue
            if first:
                self._baseline[pid] = used
            self._last[pid] = (name, used)

    def __enter__(self) -> CpuSampler:
        self._sample(first=True)
        self._ticks.start()
        return self

    def totals(self) -> dict[str, float]:
        """CPU seconds by component since the start, as of the last sample (every `interval`)."""
        totals = dict.fromkeys(self._components, 0.0)
        for pid, (name, used) in list(self._last.items()):
            totals[name] += used - self._baseline.get(pid, 0.0)
        return totals

    def __exit__(self, *exc: object) -> None:
        self._ticks.stop()
        self._sample()
        self.seconds = {name: round(value, 2) for name, value in self.totals().items()}


def per_record_us(big: dict[str, float], small: dict[str, float], records: int) -> dict[str, float]:
    """Microseconds of CPU a record by component, from two runs that differ by `records`
    records: what a start costs (the same in both) cancels out."""
    return {name: round((big[name] - small.get(name, 0.0)) / records * 1e6, 1) for name in big}
