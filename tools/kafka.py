"""Put transactions on a Kafka topic and read the job's topics back (confluent-kafka).

    python -m tools.kafka produce --bootstrap_servers 127.0.0.1:9092 --topic transactions data/sample/transactions.jsonl
    python -m tools.kafka consume --bootstrap_servers 127.0.0.1:9092 --topic scored [--max N] [--idle 5]
    python -m tools.kafka topics  --bootstrap_servers 127.0.0.1:9092 --create T1,T2 [--partitions 4]

produce: one record per non-blank line, the line's bytes as the value, keyed by its transaction_id
(the record's partition follows it), with idempotence and acks=all; --rate paces it (records a
second, 0: as fast as possible); --live sets each event_time to the moment it is sent, as
tools.stream_files does (the bundled sample's times are weeks old: a streaming job would refuse
them as LATE_RECORD). Prints how many were written.
consume: each record as a JSON line: topic, partition, offset, key, the value (as JSON when it is
JSON, else as text) and headers; stops after --max records or --idle seconds without one.
scripts/kafka.sh produce|consume call these with the address of the broker it started.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.io.kafka_expansion import free_port
from tools import stream_files

_TRANSACTION_ID = re.compile(rb'"transaction_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


class Delivered(NamedTuple):
    key: bytes | None
    value: bytes
    partition: int
    offset: int
    produced_at: float


def transaction_key(line: bytes) -> bytes | None:
    match = _TRANSACTION_ID.search(line)
    return match.group(1) if match else None


SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "kafka.sh"


class BrokerError(RuntimeError):
    """scripts/kafka.sh could not start the broker."""


class Broker:
    """A broker of one's own (tests, benchmarks): scripts/kafka.sh with its state in `state_dir`,
    on a free port of 127.0.0.1. `stop(keep_data=True)` then `start()` bring the same broker back."""

    def __init__(self, state_dir: str):
        self.env = dict(os.environ, RISKPIPE_KAFKA_STATE=state_dir)
        self.bootstrap = ""

    def _script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True)

    def start(self) -> str:
        """Starts the broker (on a new free port the first time); returns its address."""
        done = self._script("start", *([] if self.bootstrap else ["--port", str(free_port())]))
        if done.returncode != 0:
            raise BrokerError(f"the Kafka broker did not start: {done.stderr[-2000:]}")
        self.bootstrap = done.stdout.strip().splitlines()[-1]
        return self.bootstrap

    def stop(self, keep_data: bool = False) -> None:
        self._script("stop", *(["--keep-data"] if keep_data else []))

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_topics(bootstrap: str, topics: Iterable[str], partitions: int = 4) -> None:
    """Creates the topics that do not exist yet and waits until they do."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if not wanted:
        return
    futures = admin.create_topics(wanted, operation_timeout=30)
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            **extra,
        }
    )


_TICK_SECONDS = 0.005


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    rate: float = 0.0,
    key_of=transaction_key,
) -> list[Delivered]:
    """Writes each value as one record; returns where each landed, in the order given."""
    out: list[Delivered | None] = []
    errors: list[str] = []
    client = producer(bootstrap)
    started = time.monotonic()

    def report(index: int, key: bytes | None, value: bytes, at: float):
        def done(err, msg) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                out[index] = Delivered(key, value, msg.partition(), msg.offset(), at)

        return done

    for count, value in enumerate(values):
        if rate > 0:
            delay = started + count / rate - time.monotonic()
            if delay > 0:
                # wake a tick after this record is due and send every record due by then: at
                # 2,000 records/s one sleep per record cost the feed about twice the CPU (13-21% of
                # a core against 7-11%), taken from the job it feeds
                client.poll(0)
                time.sleep(delay + _TICK_SECONDS)
        key = key_of(value)
        out.append(None)
        while True:
            try:
                client.produce(topic, value=value, key=key, on_delivery=report(count, key, value, time.time()))
                break
            except BufferError:
                client.poll(0.1)
        client.poll(0)
    if client.flush(60) > 0:
        raise RuntimeError(f"kafka: records to {topic} not delivered within 60 s")
    if errors:
        raise RuntimeError(f"kafka: {len(errors)} records to {topic} failed: {errors[0]}")
    return [d for d in out if d is not None]


def consume(
    bootstrap: str, topic: str, idle_seconds: float = 5.0, max_records: int = 0, group: str = ""
) -> Iterator[dict[str, Any]]:
    """The topic's records from the beginning, as dicts, until `idle_seconds` bring none."""
    client = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"riskpipe-reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": bool(group),
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = client.list_topics(topic, timeout=30).topics[topic]
        client.assign([TopicPartition(topic, p, 0 if not group else -1001) for p in metadata.partitions])
        count, last = 0, time.monotonic()
        while time.monotonic() - last < idle_seconds and (not max_records or count < max_records):
            for msg in client.consume(num_messages=10_000, timeout=0.5):
                if msg.error():
                    continue
                last = time.monotonic()
                count += 1
                yield record_dict(msg)
                if max_records and count >= max_records:
                    break
    finally:
        client.close()


def record_dict(msg) -> dict[str, Any]:
    value = msg.value() or b""
    try:
        decoded: Any = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or hostile JSON nested too deep
        decoded = value.decode("utf-8", "backslashreplace")
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp_ms": msg.timestamp()[1],
        "key": (msg.key() or b"").decode("utf-8", "backslashreplace"),
        "headers": {k: (v or b"").decode("utf-8", "backslashreplace") for k, v in (msg.headers() or [])},
        "value": decoded,
    }


def live(lines: list[bytes], jitter_seconds: float = 2.0, seed: int = 7) -> Iterator[bytes]:
    """The lines with their event times rebased to the moment each is taken (tools.stream_files)."""
    newest = stream_files.newest_event_time(lines)
    rng = random.Random(seed)
    for line in lines:
        yield stream_files.rebase(line, time.time(), newest, jitter_seconds, rng)


def file_lines(paths: Iterable[str | os.PathLike[str]]) -> Iterator[bytes]:
    """The non-blank lines of the files, without their line ends."""
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kafka", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_produce = sub.add_parser("produce", help="write JSON lines to a topic")
    p_produce.add_argument("files", nargs="+")
    p_produce.add_argument("--topic", required=True)
    p_produce.add_argument("--rate", type=float, default=0.0)
    p_produce.add_argument("--live", action="store_true", help="event times rebased to the moment of sending")
    p_consume = sub.add_parser("consume", help="print a topic's records")
    p_consume.add_argument("--topic", required=True)
    p_consume.add_argument("--max", type=int, default=0)
    p_consume.add_argument("--idle", type=float, default=5.0)
    p_topics = sub.add_parser("topics", help="create topics")
    p_topics.add_argument("--create", required=True, help="comma-separated topic names")
    p_topics.add_argument("--partitions", type=int, default=4)
    for p in (p_produce, p_consume, p_topics):
        p.add_argument("--bootstrap_servers", required=True)
    args = parser.parse_args(argv)
    if args.command == "produce":
        create_topics(args.bootstrap_servers, [args.topic])
        values: Iterable[bytes] = file_lines(args.files)
        if args.live:
            values = live(list(values))
        delivered = produce(args.bootstrap_servers, args.topic, values, args.rate)
        print(f"produced {len(delivered)} records to {args.topic} at {args.bootstrap_servers}", file=sys.stderr)
    elif args.command == "consume":
        for record in consume(args.bootstrap_servers, args.topic, args.idle, args.max):
            sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    else:
        create_topics(args.bootstrap_servers, args.create.split(","), args.partitions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
