"""The data generator and the model trainer."""

import csv
import datetime as dt
import hashlib
import json
import random
from zoneinfo import ZoneInfo

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.shared import feature_sets
from tests.conftest import MODEL
from tools import generate, train


def digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_generator_is_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate.generate(2000, seed=3, invalid_fraction=0.1, out=a)
    generate.generate(2000, seed=3, invalid_fraction=0.1, out=b)
    generate.generate(2000, seed=4, invalid_fraction=0.1, out=c)
    assert digest(a) == digest(b)
    assert digest(a)["transactions.jsonl"] != digest(c)["transactions.jsonl"]
    assert set(digest(a)) == {
        "transactions.jsonl",
        "customers.jsonl",
        "merchants.jsonl",
        "labels.jsonl",
        "generator.json",
    }


def test_generator_output_has_fraud_invalid_records_and_ground_truth(tmp_path):
    counts = generate.generate(20000, seed=8, invalid_fraction=0.05, out=tmp_path)
    labels = [orjson.loads(line) for line in open(tmp_path / "labels.jsonl", "rb")]
    lines = open(tmp_path / "transactions.jsonl", "rb").read().splitlines()
    assert len(labels) == len(lines) == 20000 == counts["records"]
    assert [r["line"] for r in labels] == list(range(1, 20001))
    invalid = [r for r in labels if r["expected_error_code"]]
    assert len(invalid) == 1000
    assert {r["invalid_kind"] for r in invalid} == {kind for kind, _ in generate.INVALID_KINDS}
    fraud = [r for r in labels if r["is_fraud"] and not r["expected_error_code"]]
    assert 0.02 < len(fraud) / 19000 < 0.08
    assert {r["pattern"] for r in fraud} == set(generate.PATTERNS)
    valid = [orjson.loads(lines[r["line"] - 1]) for r in labels if not r["expected_error_code"]]
    currencies = {v["amount"]["currency"] for v in valid}
    assert {"EUR", "USD", "JPY", "KWD"} <= currencies
    assert len({v["card_id"] for v in valid}) > 500
    homes = {c["card_id"]: c["home_country"] for c in map(orjson.loads, open(tmp_path / "customers.jsonl", "rb"))}
    abroad = np.mean([v["country"] != homes[v["card_id"]] for v in valid if v["card_id"] in homes])
    assert 0.03 < abroad < 0.2
    assert sum(r["missing_profile"] for r in labels) > 0


@pytest.mark.slow
def test_trainer_writes_an_onnx_model_and_its_card(tmp_path):
    data, out = tmp_path / "data", tmp_path / "model"
    generate.generate(20000, seed=21, invalid_fraction=0.01, out=data)
    assert train.main(["--data", str(data), "--out", str(out), "--max-iter", "40", "--seed", "3"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["features"] == list(feature_sets.names(feature_sets.WITH_VELOCITY))
    assert card["feature_set_version"] == feature_sets.WITH_VELOCITY
    assert card["seed"] == 3 and card["held_out"]["roc_auc"] > 0.9 and 0 < card["held_out"]["pr_auc"] <= 1
    for split in ("by_time", "random"):
        assert set(card["comparison"][split]) == set(feature_sets.FEATURE_SETS)
        for scores in card["comparison"][split].values():
            assert set(scores) == {"roc_auc", "pr_auc", "recall_at_1pct_fpr", "recall_at_0.1pct_fpr"}
    assert card["onnx_vs_lightgbm_max_abs_diff"] < 1e-5
    assert card["model_version"].startswith("fraud-gbm-fs-v2-")
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == card["sha256"]
    assert card["contributions"]["file"] == "model.txt"
    assert hashlib.sha256((out / "model.txt").read_bytes()).hexdigest() == card["contributions"]["sha256"]
    assert "ROC-AUC" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_shipped_model_separates_fraud_on_fresh_generator_data(tmp_path):
    generate.generate(30000, seed=1234, invalid_fraction=0.0, out=tmp_path)
    table = train.feature_table(tmp_path, feature_sets.WITH_VELOCITY)
    labels = train.read_labels(tmp_path)
    x, y = table.values, np.asarray([labels[txn_id] for txn_id in table.ids])
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    scores = session.run(["probabilities"], {"X": x})[0][:, 1]
    assert roc_auc_score(y, scores) >= 0.95
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    assert card["feature_set_version"] == feature_sets.WITH_VELOCITY
    # The targets on the generator's data, held out by time: with velocity at least 0.97 ROC-AUC
    # and 0.85 PR-AUC, and both above the stateless model's on the same split.
    with_velocity = card["comparison"]["by_time"][feature_sets.WITH_VELOCITY]
    stateless = card["comparison"]["by_time"][feature_sets.STATELESS]
    assert card["held_out"]["roc_auc"] >= 0.97 and card["held_out"]["pr_auc"] >= 0.85
    assert with_velocity["roc_auc"] > stateless["roc_auc"] and with_velocity["pr_auc"] > stateless["pr_auc"]
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == card["sha256"]


@pytest.mark.slow
def test_shipped_model_is_reproduced_by_its_card(tmp_path):
    """The card says how the model was made; doing it again gives the same bytes. Changing the
    feature code or the generator without re-training the shipped model fails here."""
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    recipe = card["training_data"]["generator"]
    assert recipe["generator_version"] == generate.GENERATOR_VERSION
    data = tmp_path / "data"
    generate.generate(recipe["records"], recipe["seed"], recipe["invalid_fraction"], data)
    out = tmp_path / "model"
    assert (
        train.main(
            [
                "--data",
                str(data),
                "--out",
                str(out),
                "--seed",
                str(card["seed"]),
                "--max-iter",
                str(card["hyperparameters"]["n_estimators"]),
            ]
        )
        == 0
    )
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == card["sha256"]
    assert hashlib.sha256((out / "model.txt").read_bytes()).hexdigest() == card["contributions"]["sha256"]


def foreign_history(folder, records=4000, seed=3):
    """A labelled history that tools.generate did not write: other id formats, one currency and
    one country, no generator.json. Fraud: night-time bursts of large amounts at one merchant."""
    rng = random.Random(seed)
    folder.mkdir()
    cards = [f"CARD:{i}" for i in range(120)]
    shops = [f"SHOP-{i:03d}" for i in range(40)]
    with open(folder / "customers.jsonl", "w") as f:
        for card in cards:
            customer = {"card_id": card, "home_country": "US", "home_lat": 40.7, "home_lon": -74.0}
            customer |= {"usual_amount": {"minor_units": "4000", "currency": "USD"}, "timezone": "America/New_York"}
            f.write(json.dumps(customer | {"account_age_days": 400}) + "\n")
    with open(folder / "merchants.jsonl", "w") as f:
        for shop in shops:
            merchant = {"merchant_id": shop, "mcc": "5411", "country": "US", "lat": 40.7, "lon": -74.0}
            f.write(json.dumps(merchant | {"risk_score": 0.01, "timezone": "America/New_York"}) + "\n")
    start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC).timestamp()
    with open(folder / "transactions.jsonl", "w") as tf, open(folder / "labels.jsonl", "w") as lf:
        for i in range(records):
            fraud = rng.random() < 0.08
            seconds = start + rng.uniform(0, 20 * 86400)
            amount = rng.randint(20000, 90000) if fraud else rng.randint(500, 9000)
            txn = {
                "transaction_id": f"TX:{seed}:{i}",
                "card_id": rng.choice(cards),
                "merchant_id": shops[0] if fraud else rng.choice(shops),
                "amount": {"minor_units": amount, "currency": "USD"},
                "event_time": dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "channel": "ECOMMERCE" if fraud else "POS",
                "mcc": "5411",
                "country": "US",
            }
            tf.write(json.dumps(txn) + "\n")
            lf.write(json.dumps({"transaction_id": txn["transaction_id"], "is_fraud": fraud}) + "\n")


@pytest.mark.slow
def test_trainer_takes_a_labelled_folder_that_the_generator_did_not_write(tmp_path):
    data, out = tmp_path / "history", tmp_path / "model"
    foreign_history(data)
    # another source's own description of the folder: recorded, never read
    (data / "generator.json").write_text(json.dumps({"name": "another simulator", "version": "1.2", "seed": 5}))
    assert train.main(["--data", str(data), "--out", str(out), "--max-iter", "30"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["training_data"]["generator"] is None and card["training_data"]["records_used"] == 4000
    assert card["training_data"]["folder_metadata"] == {"name": "another simulator", "version": "1.2", "seed": 5}
    assert card["held_out"]["roc_auc"] > 0.9
    assert "labelled history in `history`" in (out / "MODEL_CARD.md").read_text()


def test_replay_leaves_out_source_errors_and_letters_without_payload(tmp_path, capsys, clock):
    from contracts.riskpipe.v1.dead_letter_pb2 import ErrorCode
    from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
    from pipeline.shared.dead_letter import make_dead_letter
    from pipeline.shared.json_codec import dead_letter_json
    from tools import replay

    def letter(code, payload, line):
        origin = RawRecord(payload=payload, source=SourcePosition(uri="in.jsonl", line=line))
        return dead_letter_json(make_dead_letter("10_validate", code, "m", origin, clock.timestamp()))

    letters = tmp_path / "dead.jsonl"
    letters.write_text(
        "\n".join(
            [
                letter(ErrorCode.ERROR_CODE_MALFORMED_JSON, b'{"broken', 2),
                letter(ErrorCode.ERROR_CODE_SOURCE_UNREADABLE, b'{"cut sh', 7),
                letter(ErrorCode.ERROR_CODE_MALFORMED_JSON, b"", 9),
            ]
        )
        + "\n"
    )
    out = tmp_path / "replay.jsonl"
    assert replay.main(["--dead-letters", str(letters), "--out", str(out)]) == 0
    assert out.read_bytes() == b'{"broken\n'
    printed = capsys.readouterr().out
    assert "source errors (not records)" in printed and "without payload" in printed


def test_stream_files_drops_complete_files_and_byte_identical_redeliveries(dataset, tmp_path):
    import collections

    from tools import stream_files

    done = stream_files.stream(dataset, tmp_path / "in", rate=20_000, file_seconds=0.01, redeliver=0.05, limit=600)
    names = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert names == [f["name"] for f in done["files"]] and not [n for n in names if n.endswith(".tmp")]
    lines = [line for name in names for line in (tmp_path / "in" / name).read_bytes().splitlines()]
    assert len(lines) == done["lines_written"] == 600 + done["redelivered"] and done["redelivered"] > 0
    counts = collections.Counter(lines)
    assert sum(n - 1 for n in counts.values()) >= done["redelivered"]  # redeliveries repeat a line byte for byte


def test_stream_files_makes_event_times_live_and_keeps_the_bad_ones_bad():
    import random

    from tools import stream_files

    rng, now, newest = random.Random(1), 1_800_000_000.0, 1_790_000_000.0
    line = b'{"transaction_id":"t","event_time":"2026-09-01T10:00:00Z","amount":1}\n'
    rebased = stream_files.rebase(line, now, newest, 2.0, rng)
    assert now - 2 <= stream_files._parse(stream_files._EVENT_TIME.search(rebased)) <= now
    assert rebased.replace(rebased[rebased.index(b'"event_time"') :][:35], b"") == line.replace(
        line[line.index(b'"event_time"') :][:35], b""
    )  # nothing else changed
    future = b'{"event_time":"2099-09-01T10:00:00Z"}'
    assert (
        stream_files._parse(stream_files._EVENT_TIME.search(stream_files.rebase(future, now, newest, 2.0, rng)))
        > now + 1e9
    )
    for bad in (
        b'{"event_time":"1999-09-01T10:00:00Z"}',
        b'{"event_time":"2026-09-01 10:00:00"}',
        b"\xff\xfe not json",
    ):
        assert stream_files.rebase(bad, now, newest, 2.0, rng) == bad


@pytest.mark.slow
def test_training_and_serving_compute_identical_feature_vectors(tmp_path):
    """tools.train's features and the job's scored records (output.include_features) agree on
    every transaction of a generated history of 50,000, to the last bit, for the widest feature
    set (fs-v3: holder features and the card summary included)."""
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipeline import runner
    from tests.helpers import job_config, read_jsonl

    data, out, model = tmp_path / "data", tmp_path / "out", tmp_path / "fs-v3"
    generate.generate(50000, seed=77, invalid_fraction=0.01, out=data)
    table = train.feature_table(data)  # the widest set, fs-v3
    # a model of fs-v3 makes the job compute every feature the trainer does
    assert train.main(["--data", str(data), "--out", str(model), "--feature-set", "fs-v3", "--max-iter", "10"]) == 0
    summary = runner.run(
        ["--config", job_config(data, out), "--include_features", "true", "--model", str(model / "model.onnx")],
        test_pipeline=TestPipeline(runner="FnApiRunner"),
    )
    assert summary["balanced"] and summary["feature_set"] == feature_sets.WITH_HOLDER
    served = {}
    for line in read_jsonl(out / "scored"):
        row = orjson.loads(line)
        assert list(row["features"]) == list(feature_sets.names(feature_sets.WITH_HOLDER))
        served[row["transaction_id"]] = np.asarray(list(row["features"].values()), dtype=np.float32)
    assert len(served) == len(table.ids) == summary["scored"] >= 49000
    mismatches = [
        txn_id
        for txn_id, values in zip(table.ids, table.values, strict=True)
        if not np.array_equal(served[txn_id], values)
    ]
    assert mismatches == []
    # The scored output is a log of the features served: the trainer reads it back as the same table
    # and trains on it (labels from the data folder).
    served_set, log = train.served_table(out)
    assert served_set == feature_sets.WITH_HOLDER
    assert log.ids == table.ids and np.array_equal(log.values, table.values)
    assert np.array_equal(log.seconds, table.seconds)
    assert (
        train.main(["--data", str(data), "--served", str(out), "--out", str(tmp_path / "model"), "--max-iter", "20"])
        == 0
    )
    assert (tmp_path / "model" / "model.onnx").exists()


def test_labels_as_other_sources_write_them(tmp_path):
    rows = [("a", True), ("b", 0), ("c", "1"), ("d", "false"), ("e", " Yes "), ("f", 1.0)]
    (tmp_path / "labels.jsonl").write_text(
        "\n".join(json.dumps({"transaction_id": t, "is_fraud": v}) for t, v in rows) + "\n\n"
    )
    assert train.read_labels(tmp_path) == {"a": 1, "b": 0, "c": 1, "d": 0, "e": 1, "f": 1}
    (tmp_path / "labels.jsonl").write_text('{"transaction_id": "a", "is_fraud": "maybe"}\n')
    with pytest.raises(ValueError, match=r"line 1: is_fraud must be"):
        train.read_labels(tmp_path)


@pytest.mark.slow
def test_a_sparkov_shaped_history_converts_and_trains_with_an_ablation(tmp_path):
    """Another generator's shape (Sparkov's columns, card numbers in clear, local times, categories)
    through tools.convert_sparkov into the trainer's layout, then fs-v3 with its ablation."""
    from tools import convert_sparkov, sparkov_like

    csv_file, data, out = tmp_path / "sparkov.csv", tmp_path / "converted", tmp_path / "model"
    made = sparkov_like.generate(40, seed=3, out=csv_file, start=dt.date(2019, 1, 1), days=120)
    again = tmp_path / "again.csv"
    sparkov_like.generate(40, seed=3, out=again, start=dt.date(2019, 1, 1), days=120)
    assert again.read_bytes() == csv_file.read_bytes()  # the same seed, the same bytes
    header = csv_file.read_text().splitlines()[0].split(",")
    assert header == list(sparkov_like.COLUMNS) and made["fraud"] > 0
    counts = convert_sparkov.convert([csv_file], data, profile_days=30)
    assert counts["records"] == made["records"] and counts["fraud"] == made["fraud"]
    txns = [json.loads(line) for line in (data / "transactions.jsonl").read_text().splitlines()]
    first = next(csv.DictReader(csv_file.open()))
    assert txns[0]["card_id"] == convert_sparkov.card_id(first["cc_num"]) and first["cc_num"] not in txns[0]["card_id"]
    assert {t["channel"] for t in txns} == {"ECOMMERCE", "POS"}
    assert {t["mcc"] for t in txns} <= set(convert_sparkov.CATEGORY_MCC.values())
    # the holder's local time, in their state's zone
    local = dt.datetime.fromisoformat(first["trans_date_trans_time"]).replace(
        tzinfo=ZoneInfo(convert_sparkov.STATE_ZONE[first["state"]])
    )
    assert txns[0]["event_time"] == local.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    customers = [json.loads(line) for line in (data / "customers.jsonl").read_text().splitlines()]
    assert all(c["birth_date"] and c["timezone"].startswith("America/") for c in customers)
    args = ["--data", str(data), "--out", str(out), "--feature-set", "fs-v3", "--max-iter", "20", "--ablation"]
    assert train.main(args) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["feature_set_version"] == feature_sets.WITH_HOLDER and card["training_data"]["generator"] is None
    rows = {row["features"]: row for row in card["ablation"]}
    assert len(rows) == 2 + 2 * len(train.ADDITIONS)
    assert rows["fs-v3"]["pr_auc"] == card["comparison"]["by_time"]["fs-v3"]["pr_auc"]
    assert "Ablation" in (out / "MODEL_CARD.md").read_text()


def test_a_replay_is_in_event_time_order_and_keeps_its_event_times():
    from tools.stream_files import in_event_time_order

    lines = [
        b'{"transaction_id":"a","event_time":"2026-10-03T10:00:00Z"}',
        b'{"transaction_id":"b","event_time":"2026-10-01T10:00:00Z"}',
        b"not json at all",  # no event time: stays right after the line before it ("b")
        b'{"transaction_id":"c","event_time":"2026-10-02T10:00:00Z"}',
        b'{"transaction_id":"d","event_time":"2091-01-01T00:00:00Z"}',  # out of range: follows "c"
    ]
    assert in_event_time_order(lines) == [lines[1], lines[2], lines[3], lines[4], lines[0]]
