"""00_source: every non-blank line of every matching file, with its file and line number."""

import gzip

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.stage_loader import load_stage

source = load_stage("00_source")


def _positions(record):
    return record.source.uri.rsplit("/", 1)[-1], record.source.line, record.payload


def test_reads_plain_and_gzip_files_by_glob_with_line_numbers(tmp_path, clock):
    (tmp_path / "a.jsonl").write_bytes(b'{"n": 1}\n{"n": 2}\r\n\n   \n{"n": 5}')
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(b'{"n": "gz1"}\n{"n": "gz2"}\n')
    (tmp_path / "ignored.txt").write_bytes(b"not matched\n")

    with TestPipeline() as p:
        records = p | source.ReadTransactions(str(tmp_path / "*.jsonl*"), clock)
        assert_that(
            records | beam.Map(_positions),
            equal_to(
                [
                    ("a.jsonl", 1, b'{"n": 1}'),
                    ("a.jsonl", 2, b'{"n": 2}'),
                    ("a.jsonl", 5, b'{"n": 5}'),
                    ("b.jsonl.gz", 1, b'{"n": "gz1"}'),
                    ("b.jsonl.gz", 2, b'{"n": "gz2"}'),
                ]
            ),
        )


def test_ingest_time_is_the_run_clock(tmp_path, clock):
    stream = [b"x\n", b"\n", b"y\n"]
    records = list(source.read_lines("f.jsonl", iter(stream), clock))
    assert records[1] is None
    assert [r.source.line for r in records if r is not None] == [1, 3]
    assert all(r.ingest_time == clock.timestamp() for r in records if r is not None)
