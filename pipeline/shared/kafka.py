"""Kafka for the job: client properties, the start position, and the Java expansion service.

The job reads and writes Kafka with Beam's cross-language KafkaIO: the Java transforms that Flink
and Dataflow run in production. Building the pipeline asks a Java *expansion service* for them,
and a local runner (Prism) runs them in a Java SDK worker. Beam would download its expansion
service jar; the job never downloads anything: scripts/kafka.sh assembles an equivalent jar from
Maven Central once and caches it (with a stop-file read, see StoppableKafkaRead.java), and
`JavaExpansion` starts that jar's expansion service and, for local runners, its Java worker pool,
for the life of one run.

Client properties (security settings: SASL, TLS) never come from config.yaml: they come from a
Java-style .properties file (kafka.properties_file) and from environment variables
RISKPIPE_KAFKA_<NAME> (RISKPIPE_KAFKA_SASL_JAAS_CONFIG -> sasl.jaas.config), the environment
winning. They are given to KafkaIO as its consumer and producer configuration, which the runner
keeps in the job's graph: use a secret store or file on the workers for real credentials.
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
from collections.abc import Mapping
from typing import NamedTuple

import apache_beam as beam

from pipeline.shared.clock import parse_rfc3339

ENV_PREFIX = "RISKPIPE_KAFKA_"
_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "kafka.sh"
STOPPABLE_READ_URN = "riskpipe:transform:kafka_read_with_metadata_until_stop_file:v1"
BYTES_DESERIALIZER = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
BYTES_SERIALIZER = "org.apache.kafka.common.serialization.ByteArraySerializer"
# What a producer of the job's output topics is asked for: no loss and no duplicates from retries.
PRODUCER_DEFAULTS = {"acks": "all", "enable.idempotence": "true", "compression.type": "lz4", "linger.ms": "20"}
_JAVA_START_SECONDS = 120


class KafkaSetupError(RuntimeError):
    """The Kafka part of the job cannot start (no jar, no Java, a service that does not answer)."""


def read_properties(path: str) -> dict[str, str]:
    """A Java .properties file's `key=value` (or `key: value`) lines; # and ! start comments."""
    props: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#!":
                continue
            cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
            if cut < 0:
                props[line] = ""
            else:
                props[line[:cut].strip()] = line[cut + 1 :].strip()
    return props


def env_properties(environ: Mapping[str, str]) -> dict[str, str]:
    """RISKPIPE_KAFKA_SASL_MECHANISM=PLAIN -> {"sasl.mechanism": "PLAIN"}."""
    return {
        name[len(ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }


def client_properties(properties_file: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    props = read_properties(properties_file) if properties_file else {}
    props.update(env_properties(os.environ if environ is None else environ))
    return props


def start_position(start: str) -> tuple[str, int | None]:
    """kafka.start -> (auto.offset.reset, start read time in epoch ms or None); ValueError when it
    is neither earliest, latest nor an RFC 3339 timestamp.

    earliest / latest apply where the consumer group has no committed offset; a timestamp starts
    every partition at the first record at or after it, whatever the group committed.
    """
    if start in ("earliest", "latest"):
        return start, None
    return "earliest", int(parse_rfc3339(start).timestamp() * 1000)


def check_start(start: str) -> None:
    """ValueError when `start` is not a start position, or a time more than a day ahead."""
    _, start_ms = start_position(start)
    if start_ms is not None and start_ms > (time.time() + 86400) * 1000:
        raise ValueError(f"{start!r} lies in the future")


def consumer_config(bootstrap: str, group_id: str, start: str, properties: Mapping[str, str]) -> dict[str, str]:
    reset, _ = start_position(start)
    # The job commits the offsets itself (kafka.commit), never the consumer on a timer: an
    # auto-commit would mark records read that are not yet written.
    config = {"auto.offset.reset": reset, **properties, "bootstrap.servers": bootstrap, "enable.auto.commit": "false"}
    if group_id:
        config["group.id"] = group_id
    return config


def producer_config(bootstrap: str, properties: Mapping[str, str]) -> dict[str, str]:
    return {**PRODUCER_DEFAULTS, **properties, "bootstrap.servers": bootstrap}


# --- the expansion service -------------------------------------------------------------------


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


class TopicSink(NamedTuple):
    """A Kafka topic the job writes to, and how (see `write`)."""

    topic: str
    producer_config: dict[str, str]
    expansion_service: str


class _WriteToTopic(beam.PTransform):
    def __init__(self, sink: TopicSink):
        super().__init__()
        self._sink = sink

    def expand(self, pairs: beam.PCollection):
        from apache_beam.io.kafka import WriteToKafka

        return pairs | WriteToKafka(
            producer_config=self._sink.producer_config,
            topic=self._sink.topic,
            key_serializer=BYTES_SERIALIZER,
            value_serializer=BYTES_SERIALIZER,
            expansion_service=self._sink.expansion_service,
        )


def write(sink: TopicSink) -> beam.PTransform:
    """(key, value) byte pairs -> the topic, through Beam's cross-language KafkaIO write. The
    pairs must be typed tuple[bytes, bytes] (apply_stage or with_output_types): KafkaIO needs a
    key-value coder, and an untyped PCollection would reach Java with a pickled one."""
    return _WriteToTopic(sink)


# Client properties the Python client (librdkafka) shares with Java's, for the lag check.
_SHARED_CLIENT_PROPERTIES = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
)


def python_client_config(bootstrap: str, group_id: str, properties: Mapping[str, str]) -> dict[str, object]:
    """A Python (librdkafka) consumer's config for the group, with the client properties it shares
    with Java's; it never commits by itself."""
    shared = {k: v for k, v in properties.items() if k in _SHARED_CLIENT_PROPERTIES}
    return {**shared, "bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False}


class GroupLag:
    """How many records of the topics the job has not read yet: what the runner looks at to stop a
    local run by idleness (everything there is has been read, for a while). The group's committed
    offsets trail the reads (they are committed once the records are written), so the run's own
    read positions are asked first."""

    def __init__(self, bootstrap: str, group_id: str, topics: list[str], start: str, properties: Mapping[str, str]):
        from confluent_kafka import Consumer

        self._consumer = Consumer(python_client_config(bootstrap, group_id, properties))
        self._topics = topics
        self._latest = start == "latest"
        _, self._start_ms = start_position(start)

    def pending(self, read: Mapping[tuple[str, int], int] | None = None) -> int:
        """Records not yet read: past the group's committed offset and past `read` (the offset
        after the last record this run read, per partition); -1 when the broker cannot be asked."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in self._consumer.list_topics(topic, timeout=5).topics[topic].partitions
            ]
            committed = self._consumer.committed(partitions, timeout=5)
            total = 0
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
                done = tp.offset if tp.offset >= 0 else self._first_offset(tp, low, high)
                done = max(done, (read or {}).get((tp.topic, tp.partition), -1))
                total += max(0, high - done)
            return total
        except (KafkaException, KeyError):
            return -1

    def committed(self) -> dict[tuple[str, int], int]:
        """The group's committed offset of each partition of the topics (those it committed)."""
        from confluent_kafka import TopicPartition

        partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.committed(partitions, timeout=10)
            if tp.offset >= 0
        }

    def _first_offset(self, tp, low: int, high: int) -> int:
        """Where the read starts in a partition the group has not committed in."""
        from confluent_kafka import TopicPartition

        if self._start_ms is None:
            return high if self._latest else low
        at = TopicPartition(tp.topic, tp.partition, self._start_ms)
        (found,) = self._consumer.offsets_for_times([at], timeout=5)
        return found.offset if found.offset >= 0 else high  # no record at or after the time: none to read

    def close(self) -> None:
        self._consumer.close()
