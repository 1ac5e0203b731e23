"""The job submitted through the portable Job API (Beam's local job service on 127.0.0.1).

This is the submission path a Flink or Dataflow run uses (Job API over gRPC, artifact staging,
LOOPBACK workers); the local job service executes the job in Python.
"""

import glob
import socket
import subprocess
import sys
import time

import pytest

from pipeline import runner
from tests.conftest import AS_OF, ROOT, need


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job_endpoint():
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    up = False
    while time.monotonic() < deadline and service.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            up = True
            break
        except OSError:
            time.sleep(0.2)
    try:
        need(up, f"Beam's local job service did not start on 127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        service.terminate()
        service.wait(timeout=30)


def sorted_lines(folder):
    return sorted(line for f in glob.glob(str(folder / "*.jsonl")) for line in open(f))


def test_portable_runner_gives_the_direct_runners_records(job_endpoint, tmp_path):
    args = ["--config", str(ROOT / "config.yaml"), "--as_of", AS_OF.isoformat()]
    portable = runner.run(
        [
            *args,
            "--output_dir",
            str(tmp_path / "portable"),
            "--runner=PortableRunner",
            f"--job_endpoint={job_endpoint}",
            "--environment_type=LOOPBACK",
        ]
    )
    direct = runner.run([*args, "--output_dir", str(tmp_path / "direct")])
    assert portable["balanced"] and portable["read"] == 10_000
    for key in ("read", "scored", "dead_letters", "dead_letters_by_code"):
        assert portable[key] == direct[key]
    for sub in ("scored", "dead_letters"):
        assert sorted_lines(tmp_path / "portable" / sub) == sorted_lines(tmp_path / "direct" / sub)
