"""A new model without a restart (predict.model_watch_dir): checked as at start-up, used from the next
batch on, every record named with the version that scored it; a broken version refused while the
running one goes on."""

import contextlib
import json
import os
import random
import shutil
import threading
import time

import orjson
import pytest

from pipeline.shared import feature_sets, model_versions
from pipeline.stages import s50_predict as predict
from tests.conftest import MODEL, ROOT
from tests.helpers import read_jsonl
from tests.test_50_predict import THRESHOLDS, featured
from tests.test_streaming import start_job, watch_config
from tools import stream_files

STATELESS = ROOT / "models" / "fraud-gbm-stateless-v2"


def add_version(models, name, source=MODEL.parent, version=None, break_model=False):
    """A copy of a shipped model as version `name`; `version` renames it in its card (same bytes)."""
    folder = models / f"{name}.tmp"
    shutil.copytree(source, folder)
    if version is not None:
        card = json.loads((folder / "model_card.json").read_text())
        card["model_version"] = version
        (folder / "model_card.json").write_text(json.dumps(card))
    if break_model:
        (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:-10])
    os.replace(folder, models / name)  # whole, or not at all
    return models / name / "model.onnx"


def test_versions_are_taken_newest_first_and_a_broken_one_is_refused_once(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    add_version(models, "v0001", version="champion-1")
    add_version(models, "v0002", break_model=True)
    refused: set[str] = set()
    found, newly = model_versions.newest_valid(str(models), feature_sets.DEFAULT, "", refused)
    assert found is not None and found.name == "v0001" and newly == ["v0002"]
    assert model_versions.newest_valid(str(models), feature_sets.DEFAULT, "", refused) == (found, [])
    add_version(models, "v0003", source=STATELESS)  # another feature set than the job computes
    found, newly = model_versions.newest_valid(str(models), feature_sets.DEFAULT, "v0001", refused)
    assert found is None and newly == ["v0003"]


def test_a_running_scorer_swaps_between_batches_and_keeps_going_past_a_refused_version(clock, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    first = add_version(models, "v0001", version="champion-1")
    watch = predict.Watch(str(models), 0.0, "v0001", feature_sets.DEFAULT)
    extras = predict.Extras(watch=watch, feature_names=feature_sets.names(feature_sets.DEFAULT))
    scorer = predict.SingleThreadOnnxModelHandler(
        str(first), providers=["CPUExecutionProvider"], extras=extras
    ).load_model()
    batch = [predict.model_input(r)[1] for r in featured(clock, 8)]

    def versions():
        return {s.model_version for s in predict.score_batch(scorer, batch)}

    before = predict.score_batch(scorer, batch)
    assert {s.model_version for s in before} == {""}  # the job's own version, stamped by the Decider
    add_version(models, "v0002", break_model=True)
    assert versions() == {""}  # refused: the running model goes on
    add_version(models, "v0003", version="challenger-3")
    after = predict.score_batch(scorer, batch)
    assert {s.model_version for s in after} == {"challenger-3"}
    assert [s.score for s in after] == [s.score for s in before]  # same bytes, renamed: same scores
    decider = predict.Decider("champion-1", THRESHOLDS, clock)
    record = featured(clock, 1)[0]
    assert decider.decide(record, before[0]).model_version == "champion-1"
    assert decider.decide(record, after[0]).model_version == "challenger-3"


@pytest.mark.slow
def test_a_model_swapped_mid_stream_on_prism_scores_every_record_once_by_one_named_version(
    dataset, tmp_path, prism_binary
):
    watch, out, models = tmp_path / "watch", tmp_path / "out", tmp_path / "models"
    watch.mkdir()
    models.mkdir()
    add_version(models, "v0001", version="fraud-v1")
    config = watch_config(
        dataset,
        out,
        watch,
        predict__model_watch_dir=str(models),
        predict__model_watch_seconds=0.5,
        streaming__stop_after_idle_seconds=8,
    )
    job = start_job(config)
    lines = [line for line in (dataset / "transactions.jsonl").read_bytes().splitlines(keepends=True) if line.strip()]
    third = len(lines) // 3
    parts = [lines[:third], lines[third : 2 * third], lines[2 * third :]]

    def all_out(count):
        """The live summary: `count` records read, and every one of them has left 50_predict."""
        try:
            live = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            return False
        return live["read"] == count and live["scored"] + live["dead_letters"] + live["duplicates"] == count

    def live(part):
        """The lines with their event times moved to now (as tools.stream_files does): none is late."""
        newest, rng = stream_files.newest_event_time(lines), random.Random(5)
        return b"".join(stream_files.rebase(line, time.time(), newest, 2.0, rng) for line in part)

    def drop(index):
        (watch / f"part-{index + 1}.jsonl").write_bytes(live(parts[index]))
        deadline = time.monotonic() + 120
        while not all_out(sum(len(p) for p in parts[: index + 1])) and time.monotonic() < deadline:
            time.sleep(0.5)

    def feed():
        time.sleep(3)
        drop(0)  # scored by version 1
        add_version(models, "v0002", break_model=True)
        time.sleep(2)  # looked at and refused; version 1 goes on
        drop(1)
        add_version(models, "v0003", version="fraud-v3")
        time.sleep(2)
        drop(2)  # scored by version 3

    feeder = threading.Thread(target=feed)
    feeder.start()
    feeder.join()
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["balanced"] and summary["read"] == len(lines)
    swaps = summary["model_swaps"]
    # refused once per worker process; accepted once per model instance that swapped (one or more)
    assert swaps["refused"] == 1 and swaps["accepted"] >= 1, (swaps, stderr.decode()[-4000:])
    interval = summary["drift"]["last_interval"]  # streaming: drift since the previous refresh too
    assert 0 <= interval["records"] <= summary["drift"]["records"] == summary["scored"] and interval["seconds"] > 0
    rows = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    ids = [row["transaction_id"] for row in rows]
    assert len(ids) == len(set(ids)) == summary["scored"]
    by_version: dict[str, set] = {}
    for row in rows:
        by_version.setdefault(row["model_version"], set()).add(row["transaction_id"])
    assert set(by_version) == {"fraud-v1", "fraud-v3"}, {k: len(v) for k, v in by_version.items()}

    def ids_of(part):
        found = set()
        for line in part:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):  # broken records: dead letters
                found.add(orjson.loads(line)["transaction_id"])
        return found & set(ids)

    # the first two thirds were scored by version 1 (the broken version 2 was refused), the last by
    # version 3: the swap lost and repeated nothing
    assert by_version["fraud-v1"] == ids_of(parts[0]) | ids_of(parts[1]) and by_version["fraud-v3"] == ids_of(parts[2])
    assert "v0002 in" in stderr.decode() and "refused" in stderr.decode() and "fraud-v3 now scores" in stderr.decode()
