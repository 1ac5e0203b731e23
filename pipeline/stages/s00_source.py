"""00_source: JSONL files, a watched folder, Kafka or Pub/Sub -> RawRecord.

In:  a file pattern (glob; local, gs://, s3://). Compression is decided as Beam decides it, from
     the file name in any case: .gz, .bz2, .zst/.zstd, .xz/.lzma, .deflate; anything else is plain.
Out: RawRecord per non-blank line: the line's bytes (a UTF-8 byte-order mark at the start of a file
     is not part of them), the file's path and the 1-based line number, the run's ingest time.
Dead letters (stage 00_source), not records but the parts of the input that could not be read:
  SOURCE_UNREADABLE   a file that cannot be opened, a folder, FIFO or device matched by the
                      pattern, a compressed file that is truncated, corrupt or not what its name
                      says. `source` names the file and the last line read before the damage
                      (0: none); the lines before it are records as usual; `payload` holds the
                      bytes of a line the damage cut short.
  RECORD_TOO_LARGE    a line longer than input.max_record_bytes: a record, refused without
                      being held in memory whole; `payload` holds its first KiB.
The source knows nothing of the payload; 10_validate judges it.

Kind `watch` (streaming, WatchTransactions): a local folder is listed every poll interval and each
new file in it is read once, as above. A file is taken only when it is complete: names that writers
use while writing (`*.tmp`, `*.part`, `*.partial`, `*.inprogress`, `*~`, hidden `.NAME`) are never
taken, so a writer writes under such a name and renames the file when it is whole; as a second
guard a file is taken only when it has not changed for `settle_seconds`. Sub-folders are not
entered. Each name is taken once per run (Beam state keyed by path). Event time comes from the
data: the source's watermark is the latest event_time of the files taken, moving on with the wall
clock from there while nothing new comes (EventTimeWatermark); a file's records carry the watermark
as it stood when the file was taken (or the file's earliest event time, where that is later) as
their Beam timestamp, so yesterday's files are on time and a record is late only when it is
behind the records taken before it by more than the allowed lateness.
The input ends (and the job drains) after `stop_after_idle_seconds` without a change in the folder,
or when a drain is requested (Ctrl-C); 0 watches until then.
Kind `kafka` (streaming, ReadKafkaTransactions): Beam's cross-language KafkaIO reads the topics
(pipeline.io.kafka: consumer group, start position, client properties, expansion service).
Each Kafka record is a RawRecord: its value as the payload; topic, partition and offset as its
source position; its key (`kafka.key`), time (`kafka.timestamp_ms`) and headers
(`kafka.header.NAME`) as attributes, as text (bytes that are not UTF-8 as \\xNN escapes). The Beam
timestamp is the record's event_time (or its partition's watermark, where that is later), and each
partition's watermark follows the event times it reads, with the same idle rule as `watch`.
Restarts (local streaming runs): a record an earlier run of the same output folder already wrote
(pipeline.io.progress: the ledger and the output files) is skipped when read again and counted
(already_written); a watched file it wrote whole is not taken again.
Kind `pubsub` (streaming, ReadPubSubTransactions): Beam's ReadFromPubSub, on Dataflow; the message
id as the source position, the attributes kept (plus `pubsub.publish_time`).
A message larger than input.max_record_bytes is a RECORD_TOO_LARGE dead letter.
Blank lines are not records: they are skipped and counted (00_source.blank_lines_skipped), so that
lines in = records read + blank lines skipped.

A plain file is cut into ranges of about split_bytes, each starting after a newline, with the
line number it starts at (one fast pass counts the newlines); the ranges are reshuffled so that
several workers read one large file in parallel and every record still knows its line. A
compressed file cannot be entered in the middle and is always one range.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.config.sections import InputConfig, PubSubConfig, SourceConfig
from pipeline.io import files, kafka, watch
from pipeline.io import pubsub as pubsub_io
from pipeline.io.files import STAGE
from pipeline.io.progress import Resume
from pipeline.shared.clock import RunClock

__all__ = ["STAGE", "ReadSource"]


class ReadSource(beam.PTransform):
    """The reader source.kind names, from pipeline.io; returns (RawRecords, dead letters).
    `kafka_read`: the Kafka read request (pipeline.launch builds it for the runner); `resume`: what
    an earlier streaming run of the same output folder wrote; `idle_seconds`: a watched folder's
    input ends after this long without a change (0: never)."""

    def __init__(
        self,
        source: SourceConfig,
        *,
        input: InputConfig,
        pubsub: PubSubConfig,
        clock: RunClock,
        idle_seconds: float = 0.0,
        kafka_read: kafka.KafkaRead | None = None,
        resume: Resume | None = None,
    ):
        super().__init__()
        limit = input.max_record_bytes
        if source.kind == "kafka":
            assert kafka_read is not None, "a Kafka source needs its read request"
            self._reader: beam.PTransform = kafka.ReadKafkaTransactions(kafka_read, clock, limit, resume)
        elif source.kind == "pubsub":
            self._reader = pubsub_io.ReadPubSubTransactions(
                pubsub.subscription or "", clock, pubsub.id_label, pubsub.timestamp_attribute, limit
            )
        elif source.kind == "watch":
            self._reader = watch.WatchTransactions(
                source.watch_dir or "",
                clock,
                source.poll_interval_seconds,
                source.settle_seconds,
                idle_seconds,
                max_record_bytes=limit,
                resume=resume,
            )
        else:
            self._reader = files.ReadTransactions(input.transactions or "", clock, max_record_bytes=limit)

    def expand(self, pbegin: beam.pvalue.PBegin):
        return pbegin | self._reader
