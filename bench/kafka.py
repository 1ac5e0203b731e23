"""Benchmark: Kafka to Kafka on Prism, sustained rate and latency, against a plain-Python loop.

    python -m bench.kafka --records 100000 [--offered 1000 2000 5000] [--latency-seconds 60] [--partitions 4]
                          [--feeds live replayed] [--settle-seconds 30]

In one run, on one generated data set (cached under .bench/), with a broker of its own
(scripts/kafka.sh, on a free port on 127.0.0.1, stopped at the end):
1. Plain loop: the records are put on a topic (event times rebased to now, as tools.kafka
   --live does); one Python process consumes them with confluent-kafka, runs the same stage
   functions as bench.plain (bench.plain.PlainScorer) and produces the scored records and dead
   letters to two topics (idempotent, acks=all). Records/s = records / (first consumed to last
   delivered).
2. Sustained: the same records on a fresh topic; the job (Prism, --source kafka, scored and
   dead-letter topics, allowed lateness an hour so that a backlog is not late) starts on the
   backlog and stops when idle; the same with a backlog of 1,000 records. Records/s = the extra
   records scored / the extra time from the job's start to its last scored record's Kafka
   timestamp (the fixed cost of starting cancels out; Prism writes a backlog in large bundles, so
   the scored records' own timestamps bunch up at the end). Then the same backlog once more,
   replayed: sorted by event time, each record keeping its own (tools.stream_files
   .in_event_time_order), so that each card's history is spread as it happened instead of
   squeezed into the moment of sending, which makes far more decisions REVIEW or DECLINE (and so
   explained) than in batch; the share is printed for each run. The plain loop reads the squeezed
   feed: compare it with the first backlog run.
3. Latency, at each --offered rate and for each --feeds: a job of its own is started and given
   one record; once that record is scored (the job's start, reported apart), records are produced
   at that rate for --latency-seconds; a record's latency is its scored record's Kafka timestamp
   minus the moment it was produced; p50, p95, p99, and p50 over the first and the last third of
   the feed (a job that keeps up has about the same latency at the end as at the start). Two
   feeds: `live`, event times rebased to the moment of sending (each card's month squeezed into
   the feed's minute: most decisions REVIEW or DECLINE, with reasons), and `replayed`, the same
   records in event-time order with their own event times (each card's history as it happened,
   sent faster than it happened: about as many decisions explained as in batch); the warm-up
   record of a replayed feed is given an event time just before the feed's first. Each latency
   is also split at 50_predict's decision (the scored record's scored_at): send -> decision (the
   read, the stages and the crossings between them) and decision -> scored topic (the sink and
   KafkaIO's write). The figures are given once more for the records sent after the feed's first
   --settle-seconds, beside the cores each of the job's processes used before and after that
   moment: a started job's Java worker compiles KafkaIO's read and write while the first of the
   feed goes through (0.5-1.1 of a core in its first 5-10 s, about 0.4 over its first 30 s),
   which the whole-feed figures include.
4. CPU a record, by process (bench.cpu, from /proc): the job's Python, Prism, the Java worker
   and expansion service and the broker, as the sustained run's CPU less the small backlog's over
   the extra records (what a start costs cancels out); the plain loop's own process (its thread
   and librdkafka's, from its first record) and the broker. Their sum says at what rate the
   machine's cores are full, whichever process is the one that waits.
Prints a table; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import datetime

import yaml
from confluent_kafka import Consumer, TopicPartition

from bench.cpu import CpuSampler, broker_matcher, job_components, per_record_us
from bench.plain import PlainScorer
from bench.run import dataset, side_by_side_parser, write_config
from bench.streaming import first_valid_line, latency_figures, run_job, with_reasons_share
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline import config as job_config
from pipeline.io import kafka_expansion
from pipeline.launch import resolve_model_version
from pipeline.shared.clock import RunClock
from pipeline.shared.json_codec import dead_letter_json, scored_json
from tools import kafka as kafka_tool
from tools import stream_files

SMALL_BACKLOG = 1000
FEEDS = ("live", "replayed")


def plain_loop(config: job_config.JobConfig, bootstrap: str, topic: str, n: int) -> dict:
    """Consume `n` records, score them with the plain stage functions, produce the results."""
    producer = kafka_tool.producer(bootstrap)
    scored_topic, dead_topic = f"{topic}-plain-scored", f"{topic}-plain-dead"
    kafka_tool.create_topics(bootstrap, [scored_topic, dead_topic])

    def send(topic: str, key: str, value: str) -> None:
        while True:
            try:
                producer.produce(topic, value.encode(), key.encode())
                return
            except BufferError:
                producer.poll(0.05)

    def write_scored(scored) -> None:
        send(scored_topic, scored.transaction_id, scored_json(scored))

    def refuse(letter) -> None:
        send(dead_topic, letter.transaction_id, dead_letter_json(letter))

    # Records come in time order from the topic: each card's history is kept as they arrive.
    scorer = PlainScorer(config, resolve_model_version(config), write_scored, refuse, in_order=False)
    clock = RunClock(config.run.as_of)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"plain-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    started = cpu_started = None
    while scorer.read < n:
        for msg in consumer.consume(num_messages=5000, timeout=1.0):
            if msg.error():
                continue
            if started is None:
                # every thread of this process from here on: the loop's and librdkafka's
                started, cpu_started = time.perf_counter(), time.process_time()
            scorer.take(
                RawRecord(
                    payload=msg.value() or b"",
                    source=SourcePosition(topic=msg.topic(), partition=msg.partition(), offset=msg.offset()),
                    ingest_time=clock.timestamp(),
                    attributes={"kafka.key": (msg.key() or b"").decode("utf-8", "backslashreplace")},
                )
            )
        producer.poll(0)
    scorer.flush()
    producer.flush(120)
    seconds = time.perf_counter() - (started or time.perf_counter())
    cpu_seconds = time.process_time() - (cpu_started or time.process_time())
    consumer.close()
    return {"records": scorer.read, "scored": scorer.scored, "seconds": seconds, "cpu_seconds": cpu_seconds}


def job_config_file(work: pathlib.Path, base: pathlib.Path, bootstrap: str, topic: str, idle: float) -> pathlib.Path:
    config = yaml.safe_load(base.read_text())
    config["source"]["kind"] = "kafka"
    config["kafka"].update(
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=f"bench-{topic}",
        scored_topic=f"{topic}-scored",
        dead_letter_topic=f"{topic}-dead",
    )
    config["streaming"]["stop_after_idle_seconds"] = idle
    config["streaming"]["allowed_lateness_seconds"] = 3600
    config["run"]["as_of"] = None
    path = work / f"kafka-config-{topic}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def scored_times(bootstrap: str, topic: str) -> dict[str, float]:
    """transaction_id -> the scored record's Kafka timestamp (seconds)."""
    return {transaction_id: on_topic for transaction_id, (on_topic, _) in scored_moments(bootstrap, topic).items()}


def scored_moments(bootstrap: str, topic: str) -> dict[str, tuple[float, float]]:
    """transaction_id -> (the scored record's Kafka timestamp, its scored_at: the moment 50_predict
    decided), in seconds."""
    return {
        r["value"]["transaction_id"]: (
            r["timestamp_ms"] / 1000,
            datetime.fromisoformat(r["value"]["scored_at"]).timestamp(),
        )
        for r in kafka_tool.consume(bootstrap, topic, idle_seconds=5)
    }


def latency_run(
    work: pathlib.Path,
    base: pathlib.Path,
    bootstrap: str,
    lines: list[bytes],
    offered: float,
    seconds: float,
    partitions: int,
    warm_up: int,
    feed_kind: str = "live",
    settle_seconds: float = 30.0,
) -> dict:
    """Records produced at `offered` records/s for `seconds` while a job runs; each one's latency
    from its production to its scored record's Kafka timestamp. `feed_kind`: live or replayed
    (the module's docstring). The figures are given for the whole feed and for the records sent
    after its first `settle_seconds` (a started job's Java worker compiles KafkaIO's code while the
    first of the feed goes through), with the CPU each of the job's processes used in each part."""
    topic = f"latency-{offered:.0f}" if feed_kind == "live" else f"latency-{feed_kind}-{offered:.0f}"
    kafka_tool.create_topics(bootstrap, [topic, f"{topic}-scored", f"{topic}-dead"], partitions=partitions)
    produced: list = []
    count = int(offered * seconds)
    if feed_kind == "live":
        first_record = next(kafka_tool.live([lines[warm_up]]))
        records: Iterable[bytes] = kafka_tool.live(lines[:count])
    else:
        records = stream_files.in_event_time_order(lines[:count])
        oldest = stream_files.oldest_event_time(records)
        first_record = stream_files.rebase(lines[warm_up], oldest - 1, oldest, 0.0, random.Random(0))

    feed_cpu: list[float] = []
    startup: list[float] = []

    def feed() -> None:
        # The feed starts once the job scores: one valid record that is not part of the feed first,
        # then the feed as soon as that record is on the scored topic. What is measured is the
        # running job's latency; its start (Prism, the Java worker, the model and its checks) is
        # reported apart.
        launched = time.time()
        kafka_tool.produce(bootstrap, topic, [first_record])
        for _ in kafka_tool.consume(bootstrap, f"{topic}-scored", idle_seconds=300, max_records=1):
            startup.append(time.time() - launched)
        if not startup:
            raise RuntimeError("the job scored nothing within 300 s of its start")
        started = time.thread_time()
        marks.append((time.monotonic(), sampler.totals()))
        settle_mark = threading.Timer(settle_seconds, lambda: marks.append((time.monotonic(), sampler.totals())))
        settle_mark.start()
        produced.extend(kafka_tool.produce(bootstrap, topic, records, rate=offered))
        settle_mark.cancel()
        marks.append((time.monotonic(), sampler.totals()))
        feed_cpu.append(time.thread_time() - started)

    # CPU seconds by process (bench.cpu) at the feed's start, after settle_seconds, at its end
    marks: list[tuple[float, dict[str, float]]] = []
    config = job_config_file(work, base, bootstrap, topic, 60)
    with CpuSampler(job_components(str(config))) as sampler:
        feeder = threading.Thread(target=feed)
        feeder.start()
        # idle 60 s: the job must not stop between its warm-up record and the feed (its first bundles
        # after a start are slow)
        summary = run_job(config, work / f"kafka-{topic}-out")
        feeder.join()
    moments = scored_moments(bootstrap, f"{topic}-scored")
    sent = {key.decode(): d.produced_at for d in produced if (key := d.key) is not None and key.decode() in moments}
    first = min(sent.values())
    timed = [(at - first, moments[k][0] - at) for k, at in sent.items()]
    # Where the latency goes: from the send to 50_predict's decision (the read, the stages before
    # it and the crossings between them), and from the decision to the scored topic (the sink's
    # encoding, the crossing to KafkaIO's write and its bundle).
    decided = [(at - first, moments[k][1] - at) for k, at in sent.items()]
    written = [(at - first, moments[k][0] - moments[k][1]) for k, at in sent.items()]
    settled = [(at - settle_seconds, latency) for at, latency in timed if at >= settle_seconds]
    # cores each process used, in the feed's first settle_seconds and after them (no figures when
    # the feed was shorter than settle_seconds)
    cores: dict[str, dict[str, float]] = {}
    if len(marks) == 3:
        for part, ((t0, used0), (t1, used1)) in (("first", marks[:2]), ("after", marks[1:])):
            cores[part] = {name: round((used1[name] - used0[name]) / max(t1 - t0, 1e-9), 2) for name in used1}
    achieved = len(produced) / (produced[-1].produced_at - produced[0].produced_at) if len(produced) > 1 else 0.0
    return {
        "feed": feed_kind,
        "offered_records_per_s": round(offered),
        "achieved_records_per_s": round(achieved),
        "seconds": seconds,
        "scored": summary["scored"],
        "with_reasons_share": with_reasons_share(summary),
        # the feed's own Python thread (librdkafka's threads not counted), as a share of one core
        "feed_cpu_share": round(feed_cpu[0] / seconds, 3) if feed_cpu else None,
        "startup_s": round(startup[0], 1) if startup else None,
        **latency_figures(timed, seconds),
        "settle_seconds": settle_seconds,
        "after_settling": latency_figures(settled, seconds - settle_seconds),
        "cores_by_process": cores,
        "to_decision": latency_figures(decided, seconds),
        "decision_to_topic": latency_figures(written, seconds),
        "late_records": summary.get("late_records", 0),
        "balanced": summary["balanced"],
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = side_by_side_parser(__doc__, records=100_000, seed=17, invalid_fraction=0.02)
    parser.add_argument("--offered", type=float, nargs="+", default=[1000.0, 2000.0, 5000.0], help="records/s")
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=30.0,
        help="the latency runs' figures are also given without the records of the feed's first SETTLE s",
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic")
    parser.add_argument(
        "--feeds", nargs="+", choices=FEEDS, default=list(FEEDS), help="the latency runs' feeds (module docstring)"
    )
    args = parser.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    latency_records = int(max(args.offered) * args.latency_seconds)
    # a few lines beyond the longest feed: the warm-up record of each latency run is one of them
    data, _ = dataset(work, max(args.records, latency_records + 1000), args.seed, args.invalid_fraction)
    base = write_config(work, data)
    lines = list(kafka_tool.file_lines([data / "transactions.jsonl"]))
    warm_up = first_valid_line(data, after=latency_records)
    kafka_expansion.ensure_jar()

    with tempfile.TemporaryDirectory(prefix="riskpipe-bench-kafka-") as state, kafka_tool.Broker(state) as broker:
        bootstrap = broker.bootstrap
        # 1. The plain loop.
        kafka_tool.create_topics(bootstrap, ["plain-in"], partitions=args.partitions)
        kafka_tool.produce(bootstrap, "plain-in", kafka_tool.live(lines[: args.records]))
        plain_config = job_config.load(job_config_file(work, base, bootstrap, "plain-in", 10))
        with CpuSampler({"Kafka broker": broker_matcher(state)}) as plain_broker:
            plain = plain_loop(plain_config, bootstrap, "plain-in", args.records)
        plain_cpu_us = {
            "plain loop (Python, librdkafka)": round(plain["cpu_seconds"] / plain["records"] * 1e6, 1),
            "Kafka broker": round(plain_broker.seconds["Kafka broker"] / plain["records"] * 1e6, 1),
        }
        plain_rps = plain["records"] / plain["seconds"]

        # 2. The job on a backlog, twice: the whole backlog and a small one. The difference of
        # the two runs' times (job start to last scored record) is the time the extra records
        # took, without the fixed cost of a start (Prism, the Java worker, the model).
        # The CPU each process of a run used (bench.cpu): the difference between the two runs, over
        # the extra records, is each process's CPU a record.
        cpu: dict[str, dict[str, float]] = {}

        def backlog_run(topic: str, count: int, replay: bool = False) -> tuple[dict, float, int]:
            kafka_tool.create_topics(bootstrap, [topic, f"{topic}-scored", f"{topic}-dead"], partitions=args.partitions)
            feed = stream_files.in_event_time_order(lines[:count]) if replay else kafka_tool.live(lines[:count])
            kafka_tool.produce(bootstrap, topic, feed)
            config = job_config_file(work, base, bootstrap, topic, 5)
            started = time.time()
            with CpuSampler(job_components(str(config), state)) as sampler:
                summary = run_job(config, work / f"kafka-{topic}-out")
            cpu[topic] = sampler.seconds
            times = scored_times(bootstrap, f"{topic}-scored")
            return summary, max(times.values()) - started, len(times)

        small_summary, small_seconds, small_scored = backlog_run("warmup", SMALL_BACKLOG)
        summary, seconds, scored = backlog_run("sustained", args.records)
        span = seconds - small_seconds
        sustained = (scored - small_scored) / span
        job_cpu_us = per_record_us(cpu["sustained"], cpu["warmup"], scored - small_scored)
        # The same backlog replayed in event-time order with its own event times: each card's
        # history as it happened (a backlog after an outage), not squeezed into the present.
        replay_summary, replay_seconds, replay_scored = backlog_run("replay", args.records, replay=True)
        replay_span = replay_seconds - small_seconds
        replay_rps = (replay_scored - small_scored) / replay_span

        # 3. Latency at each offered rate, each with a job of its own.
        latency_rows = [
            latency_run(
                work,
                base,
                bootstrap,
                lines,
                rate,
                args.latency_seconds,
                args.partitions,
                warm_up,
                kind,
                args.settle_seconds,
            )
            for kind in args.feeds
            for rate in args.offered
        ]
        latency_summaries = [row.pop("summary") for row in latency_rows]

    n = args.records
    print(f"records: {n:,}   Kafka to Kafka, broker on 127.0.0.1, one machine\n")
    print(f"| {'run':<44} | {'records/s':>10} | {'seconds':>8} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 10}|")
    print(f"| {'plain Python loop (confluent-kafka)':<44} | {plain_rps:>10,.0f} | {plain['seconds']:>8.2f} |")
    print(f"| {'job, sustained (Prism, KafkaIO)':<44} | {sustained:>10,.0f} | {span:>8.2f} |")
    print(f"| {'job, sustained, replayed in event-time order':<44} | {replay_rps:>10,.0f} | {replay_span:>8.2f} |")
    print(f"\njob start to last scored record: {seconds:.1f} s for {n:,}, {small_seconds:.1f} s for {SMALL_BACKLOG:,}")
    print(f"\njob / plain loop: {sustained / plain_rps:.2f}   (target: 5,000 records/s and 0.4 of the plain loop)")
    print(
        f"REVIEW or DECLINE (with reasons): backlog {with_reasons_share(summary):.1%}, "
        f"replayed {with_reasons_share(replay_summary):.1%}"
    )
    cores = os.cpu_count() or 1
    print(f"\nCPU a record, µs (the sustained run less the {SMALL_BACKLOG:,}-record one, over the extra records):\n")
    print("| process | job | plain loop |")
    print("|---|---|---|")
    for name, us in job_cpu_us.items():
        plain_us = plain_cpu_us.get(name)
        print(f"| {name} | {us:,.0f} | {'' if plain_us is None else f'{plain_us:,.0f}'} |")
    print(f"| plain loop (Python, librdkafka) | | {plain_cpu_us['plain loop (Python, librdkafka)']:,.0f} |")
    job_total, plain_total = sum(job_cpu_us.values()), sum(plain_cpu_us.values())
    print(f"| **all** | **{job_total:,.0f}** | **{plain_total:,.0f}** |")
    print(
        f"\n{cores} cores are full at {cores * 1e6 / job_total:,.0f} records/s for the job, "
        f"{cores * 1e6 / plain_total:,.0f} for the plain loop"
    )
    print(
        "\n| feed | offered records/s (achieved) | seconds | scored | with reasons | p50 s | p95 s | p99 s "
        "| p50 s, first / last third | feed CPU | job start s | late |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in latency_rows:
        print(
            f"| {row['feed']} | {row['offered_records_per_s']:,} ({row['achieved_records_per_s']:,}) | "
            f"{row['seconds']:.0f} | "
            f"{row['scored']:,} | {row['with_reasons_share']:.1%} | {row['p50_s']:.2f} | {row['p95_s']:.2f} | "
            f"{row['p99_s']:.2f} | "
            f"{row['p50_first_third_s']:.2f} / {row['p50_last_third_s']:.2f} | {row['feed_cpu_share']:.0%} | "
            f"{row['startup_s']} | {row['late_records']:,} |"
        )
    print(
        f"\nAfter the feed's first {args.settle_seconds:.0f} s (records sent later), and the cores each of the "
        "job's processes used before and after them\n"
    )
    print("| feed | offered records/s | p50 s | p95 s | p99 s | cores, first part | cores, after |")
    print("|---|---|---|---|---|---|---|")

    def used(cores: dict[str, float]) -> str:
        return ", ".join(f"{name} {value:.2f}" for name, value in cores.items() if value >= 0.01)

    for row in latency_rows:
        after, cores = row["after_settling"], row["cores_by_process"]
        print(
            f"| {row['feed']} | {row['offered_records_per_s']:,} | {after['p50_s']:.2f} | {after['p95_s']:.2f} | "
            f"{after['p99_s']:.2f} | {used(cores.get('first', {}))} | {used(cores.get('after', {}))} |"
        )
    print("\nWhere the latency goes: send -> 50_predict's decision (scored_at) -> the scored topic, p50 / p99 s\n")
    print("| feed | offered records/s | send to decision | decision to topic |")
    print("|---|---|---|---|")
    for row in latency_rows:
        to_decision, to_topic = row["to_decision"], row["decision_to_topic"]
        print(
            f"| {row['feed']} | {row['offered_records_per_s']:,} | "
            f"{to_decision['p50_s']:.2f} / {to_decision['p99_s']:.2f} | "
            f"{to_topic['p50_s']:.2f} / {to_topic['p99_s']:.2f} |"
        )
    print(
        json.dumps(
            {
                "records": n,
                "plain_records_per_s": round(plain_rps),
                "plain_seconds": round(plain["seconds"], 2),
                "job_sustained_records_per_s": round(sustained),
                "job_sustained_span_s": round(span, 2),
                "job_over_plain": round(sustained / plain_rps, 3),
                "sustained_balanced": summary["balanced"] and small_summary["balanced"],
                "job_seconds_to_last_scored": round(seconds, 2),
                "job_seconds_to_last_scored_small_backlog": round(small_seconds, 2),
                "sustained_scored": summary["scored"],
                "sustained_with_reasons_share": with_reasons_share(summary),
                "replay_records_per_s": round(replay_rps),
                "replay_span_s": round(replay_span, 2),
                "replay_with_reasons_share": with_reasons_share(replay_summary),
                "replay_balanced": replay_summary["balanced"],
                "partitions": args.partitions,
                "cpu_us_per_record": {"job": job_cpu_us, "plain": plain_cpu_us},
                "cpu_seconds": cpu,
                "latency": latency_rows,
            }
        )
    )
    balanced = summary["balanced"] and replay_summary["balanced"]
    return 0 if balanced and all(s["balanced"] for s in latency_summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
