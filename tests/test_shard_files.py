"""pipeline.io.shard_files: a stage's shards kept beside the outputs for a restart. Appends come
back in order, a rewrite replaces what came before, a record a crash cut short is cut off (and
what is appended after it is read), and a run with another shard count starts without them."""

from __future__ import annotations

import logging
import os

from pipeline.io import shard_files
from pipeline.io.shard_files import ShardFiles


def test_appends_come_back_in_order_and_a_rewrite_replaces_them(tmp_path):
    files = ShardFiles(str(tmp_path / "state" / "20_dedupe"), 4)
    assert files.load(1) == []
    files.append(1, [("a", b"p", 1, ("file:x", 1)), ("b", b"q", 2, None)])
    files.append(1, [])
    files.append(1, [("c", b"r", 3, ("kafka:t:0", 5))])
    files.append(2, [("d", b"s", 4, None)])
    assert [e[0] for e in files.load(1)] == ["a", "b", "c"]
    files.rewrite(1, [("c", b"r", 3, ("kafka:t:0", 5))])
    files.append(1, [("e", b"t", 5, None)])
    assert [e[0] for e in ShardFiles(files.folder, 4).load(1)] == ["c", "e"]
    assert [e[0] for e in files.load(2)] == ["d"]
    assert shard_files.kept_files(str(tmp_path / "state")) == 2
    assert not [name for name in os.listdir(os.path.dirname(files.path(1))) if name.endswith(".tmp")]


def test_a_record_cut_short_by_a_crash_is_cut_off(tmp_path, caplog):
    files = ShardFiles(str(tmp_path / "35_velocity"), 2)
    files.append(0, [("k", (1, 0, "a"))])
    files.append(0, [("k", (2, 0, "b"))])
    size = os.path.getsize(files.path(0))
    os.truncate(files.path(0), size - 3)  # the second append's last bytes never reached the file
    with caplog.at_level(logging.WARNING):
        assert files.load(0) == [("k", (1, 0, "a"))]
    assert "cut off" in caplog.text
    files.append(0, [("k", (3, 0, "c"))])  # what comes after is read
    assert files.load(0) == [("k", (1, 0, "a")), ("k", (3, 0, "c"))]


def test_a_run_with_another_shard_count_starts_without_them_and_says_so(tmp_path, caplog):
    folder = str(tmp_path / "20_dedupe")
    ShardFiles(folder, 16).append(0, [("a", b"p", 1, None)])
    with caplog.at_level(logging.WARNING):
        assert ShardFiles(folder, 8).load(0) == []
    assert "16 shards" in caplog.text and "streaming.state_shards" in caplog.text
