"""KafkaIO's Java side for one run: the expansion service (and, for local runners, the Java worker pool).

The job reads and writes Kafka with Beam's cross-language KafkaIO: the Java transforms that Flink
and Dataflow run in production. Building the pipeline asks a Java *expansion service* for them,
and a local runner (Prism) runs them in a Java SDK worker. Beam would download its expansion
service jar (its JavaJarExpansionService does); the job never downloads anything: scripts/kafka.sh
assembles an equivalent jar from Maven Central once and caches it (with a stop-file read, see
StoppableKafkaRead.java), and `JavaExpansion` starts that jar's expansion service and its worker
pool for the life of one run, and stops them with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "kafka.sh"
_JAVA_START_SECONDS = 120


class KafkaSetupError(RuntimeError):
    """The Kafka part of the job cannot start (no jar, no Java, a service that does not answer)."""


def find_jar() -> str:
    """The expansion service jar: $RISKPIPE_KAFKA_EXPANSION_JAR, or the one scripts/kafka.sh built."""
    named = os.environ.get("RISKPIPE_KAFKA_EXPANSION_JAR")
    if named:
        if not os.path.isfile(named):
            raise KafkaSetupError(f"RISKPIPE_KAFKA_EXPANSION_JAR: no such file {named!r}")
        return named
    if _SCRIPT.is_file():
        done = subprocess.run(
            ["bash", str(_SCRIPT), "expansion-jar", "--cached"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return done.stdout.strip().splitlines()[-1]
    raise KafkaSetupError(
        "Beam's Kafka expansion service is not built: build it once with scripts/kafka.sh expansion-jar "
        "(from Maven Central, about 90 s), or give --kafka_expansion_service HOST:PORT or a jar"
    )


def ensure_jar() -> str:
    """The expansion service jar, built first by scripts/kafka.sh when it is missing."""
    try:
        return find_jar()
    except KafkaSetupError:
        if not _SCRIPT.is_file():
            raise
    done = subprocess.run(["bash", str(_SCRIPT), "expansion-jar"], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise KafkaSetupError(f"scripts/kafka.sh expansion-jar failed (exit {done.returncode})")
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + _JAVA_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise KafkaSetupError(f"{what} exited at start (exit {process.returncode}): {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise KafkaSetupError(f"{what} did not open port {port} within {_JAVA_START_SECONDS} s: {_tail(log)}")


def _tail(log: pathlib.Path) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-2000:]
    return ""


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child process before it runs its program: the kernel kills it (SIGKILL) when the
    process that started it dies, however it dies (kill -9 included), so that no Java process of
    the job outlives the job. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError("Java 17 or later is required for Kafka (KafkaIO runs in Java)")
    return java


class JavaExpansion:
    """For one run: the address of an expansion service for KafkaIO, and a stop file.

    `service` is what --kafka_expansion_service says: HOST:PORT of a running service (used as it
    is), a jar (started here), or empty: the jar scripts/kafka.sh built. With `local_worker`
    (runners on this machine, such as Prism) a Java SDK worker pool from the same jar is started
    too and the expanded transforms run there (Beam's EXTERNAL environment); otherwise they get
    the expansion service's default environment (Beam's Java SDK container, as Flink and
    Dataflow run it). Everything started is stopped on exit.
    """

    def __init__(self, service: str = "", local_worker: bool = True):
        self._service = service
        self._local_worker = local_worker
        self._processes: list[subprocess.Popen] = []
        self._folder: str | None = None
        self.address = ""
        self.stop_file = ""

    def __enter__(self) -> JavaExpansion:
        self._folder = tempfile.mkdtemp(prefix="riskpipe-kafka-")
        if self._local_worker:
            self.stop_file = os.path.join(self._folder, "stop")
        if self._service and not self._service.endswith(".jar"):
            self.address = self._service
            return self
        try:
            self._start(self._service or find_jar())
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, jar: str) -> None:
        java = _java()
        folder = pathlib.Path(self._folder or ".")
        args = []
        if self._local_worker:
            jamm = sorted(pathlib.Path(jar).parent.glob("jamm-*.jar"))
            if not jamm:
                raise KafkaSetupError(f"no jamm jar beside {jar} (scripts/kafka.sh expansion-jar puts it there)")
            worker_port = free_port()
            worker_log = folder / "java-worker.log"
            options = {"options": {"defaultEnvironmentConfig": f"127.0.0.1:{worker_port}"}}
            worker = subprocess.Popen(
                [
                    java,
                    f"-javaagent:{jamm[0]}",
                    "-Xmx1g",
                    "-cp",
                    f"{jar}{os.pathsep}{jamm[0]}",
                    "org.apache.beam.fn.harness.ExternalWorkerService",
                ],
                env=dict(os.environ, PIPELINE_OPTIONS=json.dumps(options)),
                stdout=open(worker_log, "wb"),  # noqa: SIM115 - the process owns it
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the job, which drains
                preexec_fn=die_with_parent,
            )
            self._processes.append(worker)
            _wait_for_port(worker_port, worker, "the Java SDK worker pool", worker_log)
            args = ["--defaultEnvironmentType=EXTERNAL", f"--defaultEnvironmentConfig=127.0.0.1:{worker_port}"]
        port = free_port()
        log = folder / "expansion-service.log"
        service = subprocess.Popen(
            [java, "-Xmx1g", "-cp", jar, "org.apache.beam.sdk.expansion.service.ExpansionService", str(port), *args],
            stdout=open(log, "wb"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._processes.append(service)
        _wait_for_port(port, service, "the Kafka expansion service", log)
        self.address = f"127.0.0.1:{port}"

    def stop_reading(self) -> None:
        """Ends every Kafka read of the run at its current offsets (local runs): drains the job."""
        if self.stop_file:
            pathlib.Path(self.stop_file).touch()

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
