"""00_source: every non-blank line of every matching file, with its file and line number."""

import gzip
import itertools
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io import files as file_io
from pipeline.io import watch


def _positions(record):
    return record.source.uri.rsplit("/", 1)[-1], record.source.line, record.payload


def expected_lines(name, data):
    return [(name, n, line.rstrip(b"\r")) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]


@pytest.mark.parametrize("split_bytes", [file_io.DEFAULT_SPLIT_BYTES, 7, 64])
def test_reads_plain_and_gzip_files_by_glob_with_line_numbers(tmp_path, clock, split_bytes):
    plain = (
        b'{"n": 1}\n{"n": 2}\r\n\n   \n{"n": 5}\n' + b"".join(b'{"n": %d}\n' % i for i in range(6, 40)) + b'{"n": 40}'
    )
    (tmp_path / "a.jsonl").write_bytes(plain)
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(b'{"n": "gz1"}\n{"n": "gz2"}\n')
    (tmp_path / "ignored.txt").write_bytes(b"not matched\n")

    with TestPipeline(runner="FnApiRunner") as p:
        records, errors = p | file_io.ReadTransactions(str(tmp_path / "*.jsonl*"), clock, split_bytes=split_bytes)
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
        ranges = list(file_io.split_file(str(path), len(data), split_bytes))
        assert ranges[0].start == 0 and ranges[-1].end == -1
        assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
        got = [
            (r.source.line, r.payload)
            for line_range in ranges
            for r in file_io.read_range(line_range, clock)
            if r is not None
        ]
        want = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        assert got == want, split_bytes


def test_ingest_time_is_the_run_clock(tmp_path, clock):
    (tmp_path / "f.jsonl").write_bytes(b"x\n\ny\n")
    records = list(file_io.read_range(file_io.LineRange(str(tmp_path / "f.jsonl"), 0, -1, 1), clock))
    assert records[1] is None
    assert [r.source.line for r in records if r is not None] == [1, 3]
    assert all(r.ingest_time == clock.timestamp() for r in records if r is not None)


# --- damaged and unreadable input -------------------------------------------------------------

LINES = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 50)) for i in range(1, 2001))


def read_all(path, clock):
    out = list(file_io.read_range(file_io.LineRange(str(path), 0, -1, 1), clock))
    records = [r for r in out if r is not None and not isinstance(r, file_io.SourceError)]
    errors = [r for r in out if isinstance(r, file_io.SourceError)]
    return records, errors


@pytest.mark.parametrize(
    "name", ["t.jsonl.GZ", "t.JSONL.Gz", "t.jsonl.bz2", "t.jsonl.ZST", "t.jsonl.xz", "t.jsonl.deflate"]
)
def test_compression_is_read_from_the_name_in_any_case_and_compressed_files_are_never_split(tmp_path, clock, name):
    import bz2
    import lzma
    import zlib

    import zstandard

    compress = {
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".zst": zstandard.ZstdCompressor().compress,
        ".xz": lzma.compress,
        ".deflate": zlib.compress,
    }["." + name.lower().rsplit(".", 1)[1]]
    path = tmp_path / name
    path.write_bytes(compress(LINES))
    assert list(file_io.split_file(str(path), path.stat().st_size, split_bytes=7)) == [
        file_io.LineRange(str(path), 0, -1, 1)
    ]
    records, errors = read_all(path, clock)
    assert errors == [] and [r.source.line for r in records] == list(range(1, 2001))
    assert b"".join(r.payload + b"\n" for r in records) == LINES


def flush_cut_gzip(data, keep):
    """A gzip stream cut right after a flush point: every byte before it decompresses cleanly."""
    import zlib

    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data[:keep]) + compressor.flush(zlib.Z_SYNC_FLUSH)


def test_a_gzip_cut_at_a_flush_point_reports_the_damage_after_the_lines_before_it(tmp_path, clock):
    path = tmp_path / "cut.jsonl.gz"
    keep = LINES.index(b'{"n": 701,') + 10  # part of line 701 survives the cut
    path.write_bytes(flush_cut_gzip(LINES, keep))
    records, errors = read_all(path, clock)
    assert [r.source.line for r in records] == list(range(1, 701))
    (error,) = errors
    assert error.last_line == 700 and "truncated" in error.reason
    assert error.partial_line == LINES[LINES.index(b'{"n": 701,') : keep]


@pytest.mark.parametrize(
    ("name", "damage", "reason"),
    [
        ("corrupt.jsonl.gz", lambda b: b[:60_000] + bytes(x ^ 0x5A for x in b[60_000:60_200]) + b[60_200:], "corrupt"),
        ("plain.jsonl.gz", lambda b: LINES, "not gzip"),
        ("half.jsonl.bz2", lambda b: b[: len(b) // 2], "truncated"),
    ],
)
def test_corrupt_truncated_or_mislabelled_files_are_a_source_error_not_a_crash(tmp_path, clock, name, damage, reason):
    import bz2
    import random as rnd

    rng = rnd.Random(1)
    data = b"".join(b'{"n": %d, "r": %d}\n' % (i, rng.getrandbits(64)) for i in range(1, 20001))
    compress = bz2.compress if name.endswith(".bz2") else gzip.compress
    path = tmp_path / name
    path.write_bytes(damage(compress(data)))
    records, errors = read_all(path, clock)
    (error,) = errors
    assert reason in error.reason
    assert [r.source.line for r in records] == list(range(1, error.last_line + 1))
    assert error.last_line < 20000


def test_folders_fifos_broken_links_and_undecodable_names_are_reported_by_name(tmp_path, clock):
    import os

    (tmp_path / "good.jsonl").write_bytes(b'{"n": 1}\n')
    (tmp_path / "folder.jsonl").mkdir()
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "absent")
    odd = os.path.join(str(tmp_path).encode(), b"name-\xff.jsonl")
    with open(odd, "wb") as f:
        f.write(b'{"n": 2}\n')
    entries = list(file_io.match_files(str(tmp_path / "*.jsonl")))
    errors = {os.path.basename(e.path): e.reason for e in entries if isinstance(e, file_io.SourceError)}
    files = sorted(file_io.display_uri(e.path).rsplit("/", 1)[1] for e in entries if isinstance(e, file_io.FileEntry))
    assert files == ["good.jsonl", "name-\\xff.jsonl"]
    assert "is a folder" in errors["folder.jsonl"]
    assert "FIFO" in errors["fifo.jsonl"]
    assert "cannot be opened" in errors["link.jsonl"]
    odd_entry = next(e for e in entries if isinstance(e, file_io.FileEntry) and "name-" in e.path)
    records, read_errors = read_all(odd_entry.path, clock)
    assert read_errors == [] and records[0].source.uri.endswith("name-\\xff.jsonl")


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path, clock):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"n": 1}\n{"n": 2}\n')
    records, _ = read_all(path, clock)
    assert [r.payload for r in records] == [b'{"n": 1}', b'{"n": 2}']


@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.gz"])
@pytest.mark.parametrize("split_bytes", [file_io.DEFAULT_SPLIT_BYTES, 50])
def test_a_line_longer_than_the_limit_is_refused_without_being_held_whole(tmp_path, clock, name, split_bytes):
    from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode

    data = b'{"n": 1}\n' + b'{"n": 2, "x": "' + b"y" * 5000 + b'"}\n{"n": 3}\n' + b"z" * 300
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    size = path.stat().st_size
    out = [
        r
        for line_range in file_io.split_file(str(path), size, split_bytes)
        for r in file_io.read_range(line_range, clock, max_record_bytes=100)
        if r is not None
    ]
    records = [(r.source.line, r.payload) for r in out if not isinstance(r, DeadLetter)]
    letters = [r for r in out if isinstance(r, DeadLetter)]
    assert records == [(1, b'{"n": 1}'), (3, b'{"n": 3}')]
    assert [(d.source.line, d.error_code) for d in letters] == [
        (2, ErrorCode.ERROR_CODE_RECORD_TOO_LARGE),
        (4, ErrorCode.ERROR_CODE_RECORD_TOO_LARGE),
    ]
    assert letters[0].payload == (b'{"n": 2, "x": "' + b"y" * 5000)[:1024]
    assert "5,017 bytes" in letters[0].message and "300 bytes" in letters[1].message


def test_the_watched_folders_watermark_follows_the_event_times_of_the_files_taken(tmp_path):
    """Event time from the data: a file's earliest and latest valid event times, none from a record
    in the future or before 2000; while nothing new comes the watermark moves on with the clock from
    the latest event time taken (so never past the clock)."""
    import datetime as dt

    from apache_beam.utils.timestamp import Timestamp

    from pipeline.shared.clock import RunClock

    path = tmp_path / "part.jsonl"
    path.write_bytes(
        b'{"transaction_id":"a","event_time":"2026-11-30T10:00:00Z"}\n'
        b'{"transaction_id":"b","event_time":"2026-11-30T09:00:00Z"}\n'
        b'{"transaction_id":"c","event_time":"2999-01-01T00:00:00Z"}\n'
        b'{"transaction_id":"d","event_time":"1999-01-01T00:00:00Z"}\n'
        b'{"transaction_id":"e","event_time":"not a time"}\n'
        b"not json\n"
    )
    earliest, latest = watch.event_time_bounds(file_io.FileEntry(str(path), path.stat().st_size), RunClock(None), 1024)
    nine = dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC).timestamp()
    assert (earliest, latest) == (Timestamp.of(nine), Timestamp.of(nine + 3600))
    watermark = watch.EventTimeWatermark()
    assert watermark.idle(1000.0) is None  # nothing taken: nothing to follow
    watermark.took(latest, now=2_000_000_000.0)
    assert watermark.idle(2_000_000_000.0) == latest
    assert watermark.idle(2_000_000_060.0) == latest + 60  # quiet for a minute: a minute on
