"""A worker process killed in a multi-process run fails the run loudly, publishes nothing, and a
re-run completes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.local import watchdog
from tests.conftest import AS_OF, ROOT
from tools import generate

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")


@pytest.mark.slow
def test_a_killed_worker_ends_the_run_with_a_clear_error_and_nothing_published(tmp_path):
    data = tmp_path / "data"
    generate.generate(150_000, seed=9, invalid_fraction=0.02, out=data)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "pipeline.runner", "--config", str(ROOT / "config.yaml"),
        "--input", str(data / "transactions.jsonl"), "--customers", str(data / "customers.jsonl"),
        "--merchants", str(data / "merchants.jsonl"), "--output_dir", str(out), "--as_of", AS_OF.isoformat(),
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    ]  # fmt: skip
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while (
            not (pids := sorted(watchdog.worker_processes(job.pid)))
            and time.monotonic() < deadline
            and job.poll() is None
        ):
            time.sleep(0.2)
        assert pids, "the job started no worker process"
        time.sleep(2.0)  # let the workers take bundles
        assert job.poll() is None, "the job finished before a worker could be killed: give it more records"
        os.kill(pids[0], signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = job.communicate(timeout=90)
        assert time.monotonic() - killed_at < 60
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 4, err[-3000:]
    assert "run failed" in err and "nothing was published" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.staging")]

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 150_000 and summary["balanced"]


def fake_worker():
    """A child process that looks like a Beam SDK worker to the watchdog."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-m", "apache_beam.runners.worker.sdk_worker_main"]
    )


@pytest.mark.slow
def test_the_watchdog_ends_a_run_whose_worker_died_if_the_runner_waits_on_it():
    lost: list[list[int]] = []
    worker = fake_worker()
    try:
        with watchdog.WorkerWatchdog(lost.append, grace=1.0, interval=0.1):
            deadline = time.monotonic() + 10
            while worker.pid not in watchdog.worker_processes(os.getpid()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # seen by the watchdog
            worker.kill()
            worker.wait()
            deadline = time.monotonic() + 10
            while not lost and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        worker.kill()
    assert lost == [[worker.pid]]


@pytest.mark.slow
def test_the_watchdog_lets_workers_go_when_the_run_finishes_in_time():
    lost: list[list[int]] = []
    worker = fake_worker()
    with watchdog.WorkerWatchdog(lost.append, grace=2.0, interval=0.1):
        time.sleep(0.5)
        worker.kill()  # the runner stops its workers at the end of a run
        worker.wait()
        time.sleep(0.3)
    time.sleep(2.5)
    assert lost == []
