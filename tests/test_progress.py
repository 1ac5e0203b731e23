"""pipeline.io.progress: records in flight until written, the Kafka commit points, the output
folder's ledger, and what a restart reads back from it."""

from __future__ import annotations

import orjson

from pipeline.io import progress


def line(**source) -> bytes:
    return orjson.dumps({"transaction_id": "t", "source": source}) + b"\n"


def test_a_partition_commits_up_to_its_first_record_still_in_flight(tmp_path):
    progress.enable(str(tmp_path))
    try:
        unit = progress.kafka_unit("tx", 0)
        progress.taken(unit, [10, 11, 12, 13])
        assert progress.commit_points() == {("tx", 0): 10}
        progress.written([(unit, 11), (unit, 12)], "scored/a.jsonl")
        assert progress.commit_points() == {("tx", 0): 10}  # 10 is not written yet: never past it
        progress.handed({"topic": "tx", "partition": 0, "offset": 10})  # a duplicate, dropped
        assert progress.commit_points() == {("tx", 0): 13}
        progress.written([(unit, 13)], "dead_letters/b.jsonl")
        assert progress.commit_points() == {("tx", 0): 14} and progress.read_positions() == {("tx", 0): 14}
        ledger = [orjson.loads(x) for x in (tmp_path / progress.LEDGER).read_bytes().splitlines()]
        assert ledger == [
            {"out": "scored/a.jsonl", "units": {unit: [11, 12]}},
            {"out": "dead_letters/b.jsonl", "units": {unit: [13, 13]}},
        ]
    finally:
        progress.disable()


def test_records_skipped_as_already_written_move_the_commit_point_and_the_read_position(tmp_path):
    """A restart that reads again the last records of a partition, written by the run before, skips
    them: the partition must still commit past them and count as read to its end, or the group's
    lag never reaches 0 and the run never stops when idle."""
    progress.enable(str(tmp_path))
    try:
        unit = progress.kafka_unit("tx", 0)
        progress.taken(unit, [5])
        progress.written([(unit, 5)], "scored/a.jsonl")
        progress.skipped(unit, [6, 7, 8])
        assert progress.commit_points() == {("tx", 0): 9} and progress.read_positions() == {("tx", 0): 9}
        progress.skipped(progress.kafka_unit("tx", 1), [0, 1])  # a partition whose records were all written
        assert progress.commit_points()[("tx", 1)] == 2
    finally:
        progress.disable()


def test_a_watched_file_is_done_once_every_range_is_read_and_every_record_written(tmp_path):
    progress.enable(str(tmp_path))
    try:
        progress.file_ranges("/in/a.jsonl", 300, 2)
        progress.taken("file:/in/a.jsonl", [1, 2])
        progress.range_read("/in/a.jsonl")
        progress.written([("file:/in/a.jsonl", 1), ("file:/in/a.jsonl", 2)], "scored/w.jsonl")
        assert b'"done"' not in (tmp_path / progress.LEDGER).read_bytes()  # one range is still unread
        progress.taken("file:/in/a.jsonl", [3])
        progress.range_read("/in/a.jsonl")
        progress.written([("file:/in/a.jsonl", 3)], "dead_letters/w.jsonl")
        entries = [orjson.loads(x) for x in (tmp_path / progress.LEDGER).read_bytes().splitlines()]
        assert entries[-1] == {"done": "/in/a.jsonl", "size": 300, "mtime_ns": 0, "records": 3}
    finally:
        progress.disable()


def test_nothing_is_tracked_unless_the_run_enables_it(tmp_path):
    progress.disable()
    progress.taken(progress.kafka_unit("tx", 0), [1])
    progress.written([(progress.kafka_unit("tx", 0), 1)], "scored/a.jsonl")
    assert progress.commit_points() == {} and not (tmp_path / progress.LEDGER).exists()


def test_a_restart_reads_back_only_the_files_that_may_hold_records_read_again(tmp_path):
    out = tmp_path / "out"
    (out / "scored").mkdir(parents=True)
    (out / "dead_letters").mkdir()
    unit = progress.kafka_unit("tx", 0)
    # Settled: every offset below the group's commit; not read back.
    (out / "scored" / "w1.jsonl").write_bytes(line(topic="tx", offset=5))
    # Past the commit: read back, its position skipped when read again.
    (out / "scored" / "w2.jsonl").write_bytes(line(topic="tx", offset=20) + line(topic="tx", offset=21))
    # Not in the ledger (a crash between the rename and the ledger's line): read back.
    (out / "dead_letters" / "w3.jsonl").write_bytes(
        line(uri="/in/b.jsonl", line=7)
        + line(uri="/in/a.jsonl", line=2)  # a done file: not read again, and a new file of its name is new
        + orjson.dumps({"error_code": "ERROR_CODE_SOURCE_UNREADABLE", "source": {"uri": "/in/b.jsonl", "line": 8}})
        + b"\n"
    )
    # A window file a crash left half written: removed, its records read again.
    (out / "scored" / ".w4.jsonl.tmp").write_bytes(line(topic="tx", offset=22))
    (out / progress.LEDGER).write_bytes(
        orjson.dumps({"out": "scored/w1.jsonl", "units": {unit: [5, 5]}})
        + b"\n"
        + orjson.dumps({"out": "scored/w2.jsonl", "units": {unit: [20, 21]}})
        + b"\n"
        + orjson.dumps({"done": "/in/a.jsonl", "size": 10, "records": 1})
        + b"\n"
        + b'{"out": "cut short by a cra'
    )
    (out / "summary.json").write_bytes(orjson.dumps({"read": 9, "scored": 3, "running": True}))
    resume = progress.Resume.load(str(out), {("tx", 0): 10})
    assert resume.done_inputs == {"/in/a.jsonl": (10, 0)}  # a line without mtime_ns: size alone
    assert resume.already_written(unit, 20) and resume.already_written(unit, 21)
    assert not resume.already_written(unit, 5) and not resume.already_written(unit, 22)
    assert resume.already_written("file:/in/b.jsonl", 7)
    assert not resume.already_written("file:/in/b.jsonl", 8)  # a source error is not a record
    assert not resume.already_written("file:/in/a.jsonl", 2)
    assert not (out / "scored" / ".w4.jsonl.tmp").exists()
    facts = resume.describe()
    assert facts["previous_run_finished"] is False and facts["previous_run"] == {
        "read": 9,
        "scored": 3,
        "running": True,
    }
    assert (facts["output_files"], facts["output_files_read_back"], facts["unfinished_window_files_removed"]) == (
        3,
        2,
        1,
    )
    assert facts["positions_already_written"] == 3
