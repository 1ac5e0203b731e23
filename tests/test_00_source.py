"""00_source: every non-blank line of every matching file, with its file and line number."""

import gzip
import itertools
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.stage_loader import load_stage

source = load_stage("00_source")


def _positions(record):
    return record.source.uri.rsplit("/", 1)[-1], record.source.line, record.payload


def expected_lines(name, data):
    return [(name, n, line.rstrip(b"\r")) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]


@pytest.mark.parametrize("split_bytes", [source.DEFAULT_SPLIT_BYTES, 7, 64])
def test_reads_plain_and_gzip_files_by_glob_with_line_numbers(tmp_path, clock, split_bytes):
    plain = (
        b'{"n": 1}\n{"n": 2}\r\n\n   \n{"n": 5}\n' + b"".join(b'{"n": %d}\n' % i for i in range(6, 40)) + b'{"n": 40}'
    )
    (tmp_path / "a.jsonl").write_bytes(plain)
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(b'{"n": "gz1"}\n{"n": "gz2"}\n')
    (tmp_path / "ignored.txt").write_bytes(b"not matched\n")

    with TestPipeline() as p:
        records, errors = p | source.ReadTransactions(str(tmp_path / "*.jsonl*"), clock, split_bytes=split_bytes)
        assert_that(errors, equal_to([]), label="NoSourceErrors")
        assert_that(
            records | beam.Map(_positions),
            equal_to(
                [
                    *expected_lines("a.jsonl", plain),
                    ("b.jsonl.gz", 1, b'{"n": "gz1"}'),
                    ("b.jsonl.gz", 2, b'{"n": "gz2"}'),
                ]
            ),
        )


@pytest.mark.parametrize("seed", range(5))
def test_ranges_cover_every_line_exactly_once(tmp_path, clock, seed):
    rng = random.Random(seed)
    lines = [b"x" * rng.randint(0, 40) for _ in range(300)]
    data = b"\n".join(lines) + (b"\n" if seed % 2 else b"")
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    for split_bytes in (1, 13, 100, 1000, 10**6):
        ranges = list(source.split_file(str(path), len(data), split_bytes))
        assert ranges[0].start == 0 and ranges[-1].end == -1
        assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
        got = [
            (r.source.line, r.payload)
            for line_range in ranges
            for r in source.read_range(line_range, clock)
            if r is not None
        ]
        want = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        assert got == want, split_bytes


def test_ingest_time_is_the_run_clock(tmp_path, clock):
    (tmp_path / "f.jsonl").write_bytes(b"x\n\ny\n")
    records = list(source.read_range(source.LineRange(str(tmp_path / "f.jsonl"), 0, -1, 1), clock))
    assert records[1] is None
    assert [r.source.line for r in records if r is not None] == [1, 3]
    assert all(r.ingest_time == clock.timestamp() for r in records if r is not None)
