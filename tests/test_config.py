"""config.yaml validation: every bad case stops the job with a message naming the key, exit 2."""

import json
import shutil

import pytest
import yaml

from pipeline import config, launch, runner
from pipeline import options as job_options
from pipeline.io import profile_store
from tests.conftest import ROOT


def write(config_dir, mutate):
    data = yaml.safe_load((config_dir / "config.yaml").read_text())
    mutate(data)
    (config_dir / "config.yaml").write_text(yaml.safe_dump(data))
    return str(config_dir / "config.yaml")


def test_the_shipped_config_is_valid():
    loaded = config.load(ROOT / "config.yaml")
    assert loaded.input.transactions == str(ROOT / "data/sample/transactions.jsonl")
    assert loaded.enrich.missing_profile_policy == "default" and loaded.run.as_of is None


def test_command_line_overrides_the_file(config_dir, tmp_path):
    loaded = config.load(
        config_dir / "config.yaml",
        {"review_threshold": "0.3", "parquet": "true", "output_dir": "elsewhere", "as_of": "2026-01-01T00:00:00Z"},
    )
    assert loaded.thresholds.review == 0.3 and loaded.output.parquet is True and loaded.output.dir == "elsewhere"
    assert loaded.run.as_of.year == 2026


BAD = [
    ("unknown_key", lambda d: d["predict"].update(modle="x"), "predict.modle: unknown key"),
    ("unknown_section", lambda d: d.update(extra={"a": 1}), "extra.a: unknown key"),
    ("wrong_type_int", lambda d: d["predict"].update(max_batch_size="many"), "predict.max_batch_size"),
    ("wrong_type_bool", lambda d: d["output"].update(parquet="sometimes"), "output.parquet"),
    ("wrong_type_float", lambda d: d["thresholds"].update(review=[0.5]), "thresholds.review"),
    ("bad_policy", lambda d: d["enrich"].update(missing_profile_policy="guess"), "enrich.missing_profile_policy"),
    ("missing_input", lambda d: d["input"].update(transactions="/nonexistent/*.jsonl"), "input.transactions"),
    ("missing_reference", lambda d: d["reference"].update(customers="/nonexistent.jsonl"), "reference.customers"),
    ("missing_model", lambda d: d["predict"].update(model="/nonexistent.onnx"), "predict.model"),
    ("no_model_key", lambda d: d["predict"].pop("model"), "predict.model"),
    ("review_above_decline", lambda d: d["thresholds"].update(review=0.95, decline=0.9), "thresholds.review"),
    ("threshold_above_one", lambda d: d["thresholds"].update(decline=1.5), "thresholds.decline"),
    ("batch_sizes", lambda d: d["predict"].update(min_batch_size=100, max_batch_size=10), "predict.max_batch_size"),
    ("negative_skew", lambda d: d["validate"].update(max_future_skew_seconds=-1), "validate.max_future_skew_seconds"),
    ("naive_as_of", lambda d: d["run"].update(as_of="2026-01-01T00:00:00"), "run.as_of"),
]


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_stops_the_job_before_it_reads_a_record(config_dir, mutate, message, capsys):
    path = write(config_dir, mutate)
    with pytest.raises(config.ConfigError, match=message.replace(".", r"\.")):
        config.load(path)
    assert runner.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and message.split(":")[0] in err
    assert not (config_dir / "out").exists()


def test_not_yaml_and_missing_file(tmp_path):
    (tmp_path / "c.yaml").write_text("input: [unclosed")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(tmp_path / "c.yaml")
    with pytest.raises(config.ConfigError, match="--config: no such file"):
        config.load(tmp_path / "absent.yaml")


def test_model_trained_on_another_feature_set_is_refused(config_dir):
    model_dir = config_dir / "model"
    shutil.copytree(ROOT / "models/fraud-gbm-v2", model_dir)
    card = (model_dir / "model_card.json").read_text().replace('"fs-v2"', '"fs-v0"')
    (model_dir / "model_card.json").write_text(card)
    path = write(config_dir, lambda d: d["predict"].update(model=str(model_dir / "model.onnx")))
    assert runner.main(["--config", path]) == 2
    with pytest.raises(config.ConfigError, match="feature set 'fs-v0'"):
        launch.resolve_model_version(config.load(path))
    # A known set whose feature list is not the job's (here: fs-v1's names under fs-v2) is refused too.
    stateless = json.loads((ROOT / "models/fraud-gbm-stateless-v2/model_card.json").read_text())
    named = json.loads(card.replace('"fs-v0"', '"fs-v2"'))
    named["features"] = stateless["features"]
    (model_dir / "model_card.json").write_text(json.dumps(named))
    with pytest.raises(config.ConfigError, match="feature set 'fs-v2' with features"):
        launch.resolve_model_version(config.load(path))


@pytest.mark.slow
def test_a_stateless_model_runs_without_the_velocity_stage(config_dir, capsys):
    model = ROOT / "models/fraud-gbm-stateless-v2/model.onnx"
    path = write(config_dir, lambda d: d["predict"].update(model=str(model)))
    assert runner.main(["--config", path]) == 0
    summary = json.loads((config_dir / "out" / "summary.json").read_text())
    assert summary["feature_set"] == "fs-v1" and summary["balanced"]
    assert summary["model_version"].startswith("fraud-gbm-fs-v1-")


def test_a_model_that_does_not_load_is_refused(config_dir):
    broken = config_dir / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    path = write(config_dir, lambda d: d["predict"].update(model=str(broken)))
    assert runner.main(["--config", path]) == 2
    with pytest.raises(config.ConfigError, match="cannot be loaded"):
        launch.check_model(config.load(path))


def test_a_model_of_another_width_is_refused(config_dir):
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    onnx_model = to_onnx(model, x[:1], options={id(model): {"zipmap": False}})
    narrow = config_dir / "narrow.onnx"
    narrow.write_bytes(onnx_model.SerializeToString())
    path = write(config_dir, lambda d: d["predict"].update(model=str(narrow)))
    with pytest.raises(config.ConfigError, match="one float tensor of 25 features"):
        launch.check_model(config.load(path))
    assert runner.main(["--config", path]) == 2


# --- every configuration problem is exit 2 naming the key, never a traceback -----------------


def to_postgres(**settings):
    """A config mutation: the postgres backend with these enrich.postgres settings."""
    return lambda d: d["enrich"].update(backend="postgres", postgres={"dsn": "host=a", **settings})


MORE_BAD = [
    ("empty_thresholds_version", lambda d: d["thresholds"].update(version=""), "thresholds.version"),
    ("blank_thresholds_version", lambda d: d["thresholds"].update(version="  "), "thresholds.version"),
    (
        "skew_past_year_9999",
        lambda d: d["validate"].update(max_future_skew_seconds=10**12),
        "validate.max_future_skew_seconds",
    ),
    ("as_of_at_the_end_of_time", lambda d: d["run"].update(as_of="9999-12-31T23:00:00Z"), "run.as_of"),
    ("as_of_not_rfc3339", lambda d: d["run"].update(as_of="2026-11-15 00:00:00Z"), "run.as_of"),
    ("bad_payload_policy", lambda d: d["dead_letter"].update(payload="some"), "dead_letter.payload"),
    ("files_backend_without_customers", lambda d: d["reference"].pop("customers"), "reference.customers"),
    ("postgres_without_dsn", lambda d: d["enrich"].update(backend="postgres"), "enrich.postgres.dsn"),
    ("unknown_backend", lambda d: d["enrich"].update(backend="redis"), "enrich.backend"),
    (
        "dsn_not_a_connection_string",
        to_postgres(dsn="host=a port"),
        "enrich.postgres.dsn",
    ),
    (
        "password_env_not_a_name",
        to_postgres(password_env="PG PASS"),
        "enrich.postgres.password_env",
    ),
    (
        "batch_size_zero",
        to_postgres(batch_size=0),
        "enrich.postgres.batch_size",
    ),
    (
        "backoff_ceiling_below_base",
        to_postgres(backoff_seconds=1, backoff_max_seconds=0.5),
        "enrich.postgres.backoff_max_seconds",
    ),
    (
        "table_name_with_three_parts",
        to_postgres(customers_table="a.b.c"),
        "enrich.postgres.customers_table",
    ),
    (
        "unknown_postgres_key",
        to_postgres(pool=3),
        "enrich.postgres.pool",
    ),
]


def test_the_postgres_backend_needs_no_reference_files(config_dir):
    def to_postgres(d):
        del d["reference"]
        d["enrich"].update(backend="postgres", postgres={"dsn": "host=127.0.0.1 dbname=risk", "retries": 0})

    loaded = config.load(write(config_dir, to_postgres))
    store = loaded.enrich.store
    assert loaded.reference.customers is None and store is not None and store.retries == 0 and store.batch_size == 500
    assert profile_store.query(store, profile_store.CUSTOMERS) == (
        'SELECT * FROM "customer_profiles" WHERE "card_id" = ANY(%(keys)s)'
    )
    assert config.load(ROOT / "config.yaml").enrich.store is None  # the default: the files


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in MORE_BAD], ids=[b[0] for b in MORE_BAD])
def test_more_bad_values_stop_the_job_with_the_key(config_dir, mutate, message, capsys):
    path = write(config_dir, mutate)
    assert runner.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (config_dir / "out").exists()


def test_paths_that_cannot_be_used_are_exit_2_with_the_key(config_dir, tmp_path, capsys):
    import os

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "t.jsonl").write_text("{}\n")
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "broken.jsonl").symlink_to(tmp_path / "absent")
    cases = [
        (["--output_dir", str(a_file)], "output.dir"),
        (["--output_dir", "/proc/riskpipe-cannot-write-here"], "output.dir"),
        (["--input", str(folder)], "input.transactions"),
        (["--input", str(folder) + "/"], "input.transactions"),
        (["--customers", str(folder)], "reference.customers"),
        (["--merchants", str(tmp_path / "fifo.jsonl")], "reference.merchants"),
        (["--customers", str(tmp_path / "broken.jsonl")], "reference.customers"),
    ]
    for extra, key in cases:
        assert runner.main(["--config", str(config_dir / "config.yaml"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err, (extra, err)


def test_a_config_file_that_is_not_utf8_is_exit_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes("output:\n  dir: caf\xe9\n".encode("latin-1"))
    assert runner.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "not UTF-8" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--decline_treshold", "0.8"], "unknown option --decline_treshold (did you mean --decline_threshold?)"),
        (["--modle=x.onnx"], "unknown option --modle (did you mean --model?)"),
        (["stray"], "unexpected argument 'stray'"),
        (["--runner", "NoSuchRunner"], "--runner: 'NoSuchRunner' is not a runner Beam knows"),
    ],
)
def test_unknown_options_stray_arguments_and_unknown_runners_are_exit_2(config_dir, capsys, extra, message):
    assert runner.main(["--config", str(config_dir / "config.yaml"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Discarding" not in err
    assert not (config_dir / "out").exists()


def test_beam_options_still_pass_and_overwrite_needs_no_value(config_dir):
    options = job_options.parse_options(
        ["--config", "c.yaml", "--runner=DirectRunner", "--direct_num_workers=2", "--overwrite",
         "--flink_master=localhost:8081", "--job_endpoint=localhost:8099", "--environment_type=LOOPBACK"]
    )  # fmt: skip
    job = options.view_as(job_options.JobOptions)
    assert job.overwrite == "true" and job.config == "c.yaml"
