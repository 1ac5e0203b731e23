"""Streaming's configuration, runner choice, output folder and watched-folder rules, without a
running job: each mistake stops the job with exit 2 before anything is read or written."""

from __future__ import annotations

import os
import time

import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)
from apache_beam.transforms.window import IntervalWindow

from pipeline import config as job_config
from pipeline import runner
from pipeline.io import watch
from pipeline.io.output_folder import OutputFolder
from pipeline.io.windowed_files import file_name
from pipeline.local import prism, runners


@pytest.fixture
def watch_dir(config_dir):
    (config_dir / "watch").mkdir()
    return config_dir / "watch"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "watch"], "source.watch_dir (--watch_dir): a value is required when source.kind is watch"),
        (["--source", "watch", "--watch_dir", "/no/such/folder"], "is not a folder (no such folder)"),
        (["--source", "watch", "--watch_dir", "gs://bucket/in"], "only a local folder can be watched"),
        (["--source", "stream"], "'stream' is not one of files, watch"),
        (["--window_seconds", "0"], "streaming.window_seconds: must be positive"),
        (["--allowed_lateness_seconds", "-1"], "streaming.allowed_lateness_seconds: must not be negative"),
        (["--dedupe_horizon_seconds", "0"], "dedupe.horizon_seconds: must be positive"),
        (["--late_policy", "drop"], "'drop' is not one of dead_letter, score"),
        (["--source", "watch", "--watch_dir", "{watch}", "--parquet"], "Parquet output is written by batch runs"),
        (["--source", "watch", "--watch_dir", "{watch}", "--runner", "FnApiRunner"], "cannot run an unbounded source"),
        (["--streaming"], "a streaming run needs an unbounded source"),
    ],
)
def test_streaming_mistakes_are_exit_2_naming_the_key(config_dir, watch_dir, capsys, extra, message):
    args = [a.replace("{watch}", str(watch_dir)) for a in extra]
    assert runner.main(["--config", str(config_dir / "config.yaml"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (config_dir / "out").exists()


def test_a_missing_prism_is_exit_2_with_how_to_build_it_and_nothing_is_downloaded(
    config_dir, watch_dir, capsys, monkeypatch
):
    monkeypatch.setenv("RISKPIPE_PRISM", str(config_dir / "no-prism"))
    args = ["--config", str(config_dir / "config.yaml"), "--source", "watch", "--watch_dir", str(watch_dir)]
    assert runner.main(args) == 2
    err = capsys.readouterr().err
    assert "Prism runner" in err and "scripts/prism.sh" in err
    assert runner.main(["--config", str(config_dir / "config.yaml"), "--runner", "DirectRunner"]) == 2


def test_every_run_names_its_runner_and_prism_gets_the_projects_binary_without_splits(monkeypatch, tmp_path):
    binary = tmp_path / "prism"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("RISKPIPE_PRISM", str(binary))
    batch = PipelineOptions([])
    assert runners.choose_runner(batch, streaming=False) == "FnApiRunner"
    stream = PipelineOptions([])
    assert runners.choose_runner(stream, streaming=True) == "PrismRunner"
    assert stream.view_as(StandardOptions).streaming
    assert stream.view_as(PrismRunnerOptions).prism_location == str(binary)
    assert prism.NO_SPLITS in stream.view_as(DebugOptions).experiments
    assert stream.view_as(PortableOptions).job_server_timeout > 30 * 24 * 3600  # not Beam's five minutes
    named = PipelineOptions(["--runner=PrismRunner", "--prism_location=/opt/prism"])
    assert runners.choose_runner(named, streaming=False) == "PrismRunner"
    assert named.view_as(PrismRunnerOptions).prism_location == "/opt/prism"


def test_batch_and_streaming_never_take_over_each_others_output_folder(tmp_path):
    out = tmp_path / "out"
    streaming = OutputFolder(str(out), appending=True)
    assert streaming.prepare() == str(out)
    (out / "scored").mkdir()
    (out / "scored" / "w.jsonl").write_text("{}\n")
    streaming.write_summary(b"{}\n")
    streaming.publish()
    again = OutputFolder(str(out), appending=True)  # a restarted streaming run adds to it
    again.prepare()
    again.abandon()
    assert (out / "scored" / "w.jsonl").exists()
    with pytest.raises(job_config.ConfigError, match="holds a streaming run's results and this is a batch run"):
        OutputFolder(str(out)).prepare()
    batch_out = tmp_path / "batch"
    batch = OutputFolder(str(batch_out))
    batch.prepare()
    batch.retire_previous()
    batch.write_summary(b"{}\n")
    batch.publish()
    with pytest.raises(job_config.ConfigError, match="holds a batch run's results and this is a streaming run"):
        OutputFolder(str(batch_out), appending=True).prepare()


def test_the_watched_folder_takes_only_complete_files(tmp_path):
    for name in ("done.jsonl", "being-written.jsonl.tmp", ".hidden.jsonl", "upload.part"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "sub").mkdir()
    time.sleep(1.2)
    (tmp_path / "fresh.jsonl").write_text("{}\n")
    now = time.time()
    files, latest = watch.list_folder(str(tmp_path), settle_seconds=1.0, now=now)
    assert [os.path.basename(f.path) for f in files] == ["done.jsonl"]  # fresh.jsonl has not settled yet
    assert latest >= now - 1  # a change that is still settling counts as activity


def test_window_file_names_carry_the_window_pane_run_and_shard():
    win = IntervalWindow(1_796_000_000, 1_796_000_060)
    assert file_name(win, 2, "r1", 0) == "20261130T005320Z-20261130T005420Z.pane2.r1.s0.jsonl"
