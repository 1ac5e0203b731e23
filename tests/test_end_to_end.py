"""The whole job on generated data with invalid records, on the DirectRunner.

Checks the quality bars: nothing lost (read = scored + dead letters + duplicates), every invalid
record dead-lettered with the code the generator says it must get, every valid one scored
exactly once with the score a direct onnxruntime call gives, and re-runs give the same records.
"""

import glob
import json

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from google.protobuf import json_format

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter
from contracts.riskpipe.v1.enriched_transaction_pb2 import (
    CustomerProfile,
    EnrichedTransaction,
    MerchantProfile,
    ProfileKind,
)
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline import runner
from pipeline.shared.clock import RunClock
from pipeline.stages import s10_validate, s30_enrich
from tests.conftest import AS_OF, MODEL
from tests.helpers import job_config, read_jsonl, with_features


def labels(dataset):
    return [orjson.loads(line) for line in open(dataset / "labels.jsonl", "rb")]


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "a"
    summary = runner.run(["--config", job_config(dataset, out)], test_pipeline=TestPipeline(runner="FnApiRunner"))
    return out, summary


@pytest.mark.slow
def test_every_record_is_accounted_for(first_run, dataset):
    out, summary = first_run
    rows = labels(dataset)
    invalid = [r for r in rows if r["expected_error_code"]]
    assert summary["read"] == len(rows) == 3000
    assert summary["dead_letters"] == len(invalid) == 150
    assert summary["scored"] == len(rows) - len(invalid)
    assert summary["duplicates"] == 0
    assert summary["balanced"] is True
    assert json.loads((out / "summary.json").read_text()) == summary
    assert len(read_jsonl(out / "scored")) == summary["scored"]
    assert len(read_jsonl(out / "dead_letters")) == summary["dead_letters"]


def test_every_invalid_record_has_the_right_code_and_its_original_bytes(first_run, dataset):
    out, summary = first_run
    letters = [json_format.Parse(line, DeadLetter()) for line in read_jsonl(out / "dead_letters")]
    got = {
        letter.source.line: DeadLetter.DESCRIPTOR.fields_by_name["error_code"]
        .enum_type.values_by_number[letter.error_code]
        .name
        for letter in letters
    }
    expected = {r["line"]: r["expected_error_code"] for r in labels(dataset) if r["expected_error_code"]}
    assert got == expected
    lines = open(dataset / "transactions.jsonl", "rb").read().split(b"\n")
    for letter in letters:
        assert letter.payload == lines[letter.source.line - 1]
        assert letter.source.uri.endswith("transactions.jsonl")
        assert letter.violations or letter.error_code in (1, 2, 3)
    by_code = {}
    for code in got.values():
        by_code[code] = by_code.get(code, 0) + 1
    assert summary["dead_letters_by_code"] == by_code


def test_every_valid_record_is_scored_once_as_onnxruntime_scores_it(first_run, dataset):
    out, _ = first_run
    scored = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    ids = [s["transaction_id"] for s in scored]
    valid = [r["transaction_id"] for r in labels(dataset) if not r["expected_error_code"]]
    assert sorted(ids) == sorted(valid) and len(set(ids)) == len(ids)

    # The same work without Beam: parse, join, per-card history in event-time order, featurize, one
    # onnxruntime call.
    parse = s10_validate.TransactionParser(RunClock(AS_OF), 300)
    read_profiles = s30_enrich.read_profile_file
    customers = read_profiles(str(dataset / "customers.jsonl"), CustomerProfile, "card_id")
    merchants = read_profiles(str(dataset / "merchants.jsonl"), MerchantProfile, "merchant_id")
    records = []
    for line in open(dataset / "transactions.jsonl", "rb"):
        txn = parse(RawRecord(payload=line.rstrip(b"\n")))
        if isinstance(txn, Transaction):
            c, m = customers.get(txn.card_id), merchants.get(txn.merchant_id)
            record = EnrichedTransaction(
                transaction=txn, customer=c or CustomerProfile(), merchant=m or MerchantProfile()
            )
            record.missing_profiles.extend(
                kind
                for kind, found in ((ProfileKind.PROFILE_KIND_CUSTOMER, c), (ProfileKind.PROFILE_KIND_MERCHANT, m))
                if found is None
            )
            records.append(record)
    featured = with_features(RunClock(AS_OF), records)
    direct_ids = [r.transaction.transaction_id for r in featured]
    rows = [list(r.features.values) for r in featured]
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"X": np.asarray(rows, dtype=np.float32)})[0][:, 1]
    direct = dict(zip(direct_ids, probabilities.tolist(), strict=True))
    job = {s["transaction_id"]: s.get("score", 0.0) for s in scored}
    assert job.keys() == direct.keys()
    assert max(abs(job[k] - direct[k]) for k in job) < 1e-6

    decisions = {s["decision"] for s in scored}
    assert decisions == {"DECISION_APPROVE", "DECISION_REVIEW", "DECISION_DECLINE"}
    missing = [s for s in scored if s.get("missing_profiles")]
    expected_missing = [r for r in labels(dataset) if r["missing_profile"] and not r["expected_error_code"]]
    assert len(missing) == len(expected_missing) > 0


def test_the_model_separates_fraud_on_the_job_output(first_run, dataset):
    from sklearn.metrics import roc_auc_score

    out, _ = first_run
    truth = {r["transaction_id"]: r["is_fraud"] for r in labels(dataset)}
    scored = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    auc = roc_auc_score([truth[s["transaction_id"]] for s in scored], [s.get("score", 0.0) for s in scored])
    assert auc > 0.9


@pytest.mark.slow
def test_a_rerun_gives_identical_records(first_run, dataset, tmp_path):
    out, _ = first_run
    again = tmp_path / "b"
    runner.run(["--config", job_config(dataset, again)], test_pipeline=TestPipeline(runner="FnApiRunner"))
    assert read_jsonl(again / "scored") == read_jsonl(out / "scored")
    assert read_jsonl(again / "dead_letters") == read_jsonl(out / "dead_letters")


@pytest.mark.slow
def test_wall_clock_reruns_differ_only_in_their_timestamps(dataset, tmp_path):
    def strip(folder, keys):
        return sorted(
            orjson.dumps({k: v for k, v in orjson.loads(line).items() if k not in keys}, option=orjson.OPT_SORT_KEYS)
            for line in read_jsonl(folder)
        )

    runs = []
    for name in ("w1", "w2"):
        out = tmp_path / name
        runner.run(
            ["--config", job_config(dataset, out, run__as_of=None), "--num_shards", "2"],
            test_pipeline=TestPipeline(runner="FnApiRunner"),
        )
        runs.append(out)
    assert strip(runs[0] / "scored", {"scored_at"}) == strip(runs[1] / "scored", {"scored_at"})
    assert strip(runs[0] / "dead_letters", {"failed_at"}) == strip(runs[1] / "dead_letters", {"failed_at"})
    assert len(glob.glob(str(runs[0] / "scored" / "*.jsonl"))) == 2


@pytest.mark.slow
def test_dead_letter_policy_refuses_records_without_profiles(dataset, tmp_path):
    out = tmp_path / "strict"
    summary = runner.run(
        ["--config", job_config(dataset, out), "--missing_profile_policy", "dead_letter"],
        test_pipeline=TestPipeline(runner="FnApiRunner"),
    )
    expected = sum(1 for r in labels(dataset) if r["missing_profile"] and not r["expected_error_code"])
    assert summary["dead_letters_by_code"]["ERROR_CODE_PROFILE_NOT_FOUND"] == expected
    assert summary["balanced"]


@pytest.mark.slow
def test_main_prints_the_summary_and_exits_zero(dataset, tmp_path, capsys):
    assert runner.main(["--config", job_config(dataset, tmp_path / "m"), "--parquet", "true"]) == 0
    printed = capsys.readouterr().out
    assert "records read" in printed and "balanced" in printed and "yes" in printed
    assert glob.glob(str(tmp_path / "m" / "scored_parquet" / "*.parquet"))


@pytest.mark.slow
def test_dead_letters_replay_through_the_job(dataset, tmp_path, capsys):
    from tools import replay

    strict = tmp_path / "strict"
    runner.run(
        ["--config", job_config(dataset, strict), "--missing_profile_policy", "dead_letter"],
        test_pipeline=TestPipeline(runner="FnApiRunner"),
    )
    replay_file = tmp_path / "replay.jsonl"
    assert (
        replay.main(
            [
                "--dead-letters",
                str(strict / "dead_letters" / "*.jsonl"),
                "--out",
                str(replay_file),
                "--code",
                "ERROR_CODE_PROFILE_NOT_FOUND",
            ]
        )
        == 0
    )
    assert "ERROR_CODE_PROFILE_NOT_FOUND" in capsys.readouterr().out
    lines = open(dataset / "transactions.jsonl", "rb").read().split(b"\n")
    missing = [r for r in labels(dataset) if r["missing_profile"] and not r["expected_error_code"]]
    assert open(replay_file, "rb").read().split(b"\n")[:-1] == [lines[r["line"] - 1] for r in missing]

    again = runner.run(
        ["--config", job_config(dataset, tmp_path / "again"), "--input", str(replay_file)],
        test_pipeline=TestPipeline(runner="FnApiRunner"),
    )
    assert again["read"] == again["scored"] == len(missing)
    assert again["default_profiles_used"]["customer"] == len(missing)
