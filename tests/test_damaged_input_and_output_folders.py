"""The whole job on input that is damaged or unreadable, and the output folder it publishes.

Damaged input never crashes the job and never passes as a clean run; an output folder holds
exactly one run's complete results, or nothing.
"""

import gzip
import json
import os
import subprocess
import sys
import zlib

import orjson
import pytest

from pipeline import runner
from pipeline import summary as run_summary
from pipeline.io.output_folder import OutputFolder
from tests.conftest import AS_OF, ROOT
from tests.helpers import read_jsonl

SAMPLE = ROOT / "data" / "sample"


def records(n, start=0):
    lines = open(SAMPLE / "transactions.jsonl", "rb").read().splitlines()
    labels = [orjson.loads(line) for line in open(SAMPLE / "labels.jsonl", "rb")]
    valid = [line for line, label in zip(lines, labels, strict=True) if not label["expected_error_code"]]
    return valid[start : start + n]


def args(input_glob, out, *extra):
    return ["--config", str(ROOT / "config.yaml"), "--input", str(input_glob), "--output_dir", str(out),
            "--as_of", AS_OF.isoformat(), *extra]  # fmt: skip


@pytest.mark.slow
def test_a_truncated_gzip_is_reported_and_the_run_is_not_a_clean_success(tmp_path, capsys):
    data = tmp_path / "in"
    data.mkdir()
    good = records(200, start=1000)
    (data / "b-good.jsonl").write_bytes(b"\n".join(good) + b"\n")
    cut = b"\n".join(records(1000)) + b"\n"
    keep = len(b"\n".join(records(700))) + 1 + 25  # 700 whole lines and a piece of the 701st
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    (data / "a-cut.jsonl.gz").write_bytes(compressor.compress(cut[:keep]) + compressor.flush(zlib.Z_SYNC_FLUSH))
    (data / "c-corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(3000))

    out = tmp_path / "out"
    code = runner.main(args(data / "*.jsonl*", out))
    printed = capsys.readouterr().out
    assert code == run_summary.EXIT_INPUT_INCOMPLETE == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 700 + 200 and summary["balanced"] is True
    assert summary["source_errors"] == 2 and summary["input_complete"] is False
    details = {os.path.basename(d["uri"]): d for d in summary["source_error_details"]}
    assert details["a-cut.jsonl.gz"]["last_line"] == 700 and "truncated" in details["a-cut.jsonl.gz"]["message"]
    assert details["c-corrupt.jsonl.gz"]["last_line"] == 0
    assert "input complete" in printed and "a-cut.jsonl.gz" in printed
    letters = [json.loads(line) for line in read_jsonl(out / "dead_letters")]
    source_letters = [d for d in letters if d["stage"] == "00_source"]
    assert len(source_letters) == 2 and all(d["error_code"] == "ERROR_CODE_SOURCE_UNREADABLE" for d in source_letters)


def test_blank_lines_are_counted_and_boms_are_stripped_in_transactions_and_reference_files(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    lines = records(30)
    (data / "t.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines[:10]) + b"\n\n   \r\n" + b"\n".join(lines[10:]))
    for name in ("customers.jsonl", "merchants.jsonl"):
        (data / name).write_bytes(b"\xef\xbb\xbf" + (SAMPLE / name).read_bytes())
    out = tmp_path / "out"
    extra = ["--customers", str(data / "customers.jsonl"), "--merchants", str(data / "merchants.jsonl")]
    summary = runner.run(args(data / "t.jsonl", out, *extra))
    assert summary["read"] == 30 and summary["blank_lines_skipped"] == 2
    assert summary["scored"] == 30 and summary["reference_rows_rejected"] == 0
    assert summary["exit_code"] == 0


@pytest.mark.slow
def test_a_fifo_and_a_folder_in_the_input_are_reported_and_never_hang(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_bytes(b"\n".join(records(20)) + b"\n")
    os.mkfifo(data / "b.jsonl")
    (data / "c.jsonl").mkdir()
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.runner", *args(data / "*.jsonl", out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 20 and summary["source_errors"] == 2
    reasons = " ".join(d["message"] for d in summary["source_error_details"])
    assert "FIFO" in reasons and "folder" in reasons


# --- output folders ---------------------------------------------------------------------------


def write_input(tmp_path, n, name="in.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(records(n)) + b"\n")
    return path


@pytest.mark.slow
def test_a_small_run_into_a_folder_of_a_larger_run_holds_only_its_own_records(tmp_path):
    out = tmp_path / "out"
    big = runner.run(args(write_input(tmp_path, 300, "big.jsonl"), out))
    small = runner.run(args(write_input(tmp_path, 100, "small.jsonl"), out))
    assert big["scored"] == 300 and small["scored"] == 100
    assert len(read_jsonl(out / "scored")) == 100
    assert json.loads((out / "summary.json").read_text())["scored"] == 100
    assert not (tmp_path / "out.previous").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.staging")) == []


@pytest.mark.slow
def test_a_failed_run_leaves_no_earlier_success_in_place(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    runner.run(args(write_input(tmp_path, 50), out))
    assert (out / "summary.json").exists()

    def broken(*a, **k):
        raise RuntimeError("runner died")

    monkeypatch.setattr(run_summary, "stage_msecs", broken)  # fails after the job ran, before publishing
    assert runner.main(args(write_input(tmp_path, 60, "next.jsonl"), out)) == run_summary.EXIT_RUN_FAILED
    assert "nothing was published" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads((tmp_path / "out.previous" / "summary.json").read_text())["scored"] == 50
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.staging")]
    monkeypatch.undo()
    assert runner.run(args(write_input(tmp_path, 70, "again.jsonl"), out))["scored"] == 70
    assert not (tmp_path / "out.previous").exists()


def test_a_folder_with_files_the_job_did_not_write_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("not the job's")
    source = write_input(tmp_path, 20)
    assert runner.main(args(source, out)) == 2
    assert "output.dir" in capsys.readouterr().err and (out / "precious.txt").exists()
    assert runner.main(args(source, out, "--overwrite")) == 0
    assert not (out / "precious.txt").exists() and len(read_jsonl(out / "scored")) == 20


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    holder = OutputFolder(str(out))
    holder.prepare()  # another run holds the folder
    try:
        assert runner.main(args(write_input(tmp_path, 20), out)) == 2
        assert "another run" in capsys.readouterr().err
        assert not out.exists()
    finally:
        holder.abandon()
    assert runner.main(args(write_input(tmp_path, 20), out)) == 0


def test_a_killed_run_leaves_nothing_published_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / ".out.staging-1-1"
    stale.mkdir()
    (stale / "scored").mkdir()
    assert runner.main(args(write_input(tmp_path, 20), out)) == 0
    assert not stale.exists()


@pytest.mark.slow
def test_compressed_input_is_scored_like_plain_input(tmp_path):
    plain = write_input(tmp_path, 40)
    packed = tmp_path / "packed.jsonl.GZ"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = runner.run(args(plain, tmp_path / "a"))
    b = runner.run(args(packed, tmp_path / "b"))
    assert a["scored"] == b["scored"] == 40


def test_a_folder_that_holds_what_the_job_reads_is_never_replaced_even_with_overwrite(tmp_path, capsys):
    source = write_input(tmp_path, 20)
    for out in (tmp_path, tmp_path.parent, ROOT):
        assert runner.main(args(source, out, "--overwrite")) == 2
        assert "choose a folder of its own" in capsys.readouterr().err
    assert source.exists() and (ROOT / "config.yaml").exists()


@pytest.mark.slow
def test_a_record_too_large_is_a_dead_letter_and_counts_as_read(tmp_path):
    lines = records(10)
    lines[4] = lines[4][:-1] + b', "padding": "' + b"p" * 5000 + b'"}'
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    summary = runner.run(args(path, out, "--max_record_bytes", "2000"))
    assert summary["read"] == 10 and summary["scored"] == 9 and summary["balanced"] and summary["exit_code"] == 0
    assert summary["dead_letters_by_code"] == {"ERROR_CODE_RECORD_TOO_LARGE": 1}
    (letter,) = [json.loads(line) for line in read_jsonl(out / "dead_letters")]
    assert letter["stage"] == "00_source" and letter["source"]["line"] == "5"
