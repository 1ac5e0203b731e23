"""Shared fixtures: generated data sets, the shipped model, and the buf binary."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import shutil

import pytest
import yaml

from pipeline.shared.clock import RunClock
from tools import generate

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "fraud-gbm-v2" / "model.onnx"
AS_OF = dt.datetime(2026, 11, 15, tzinfo=dt.UTC)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip when something a test needs is missing on this machine; under CI that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def clock() -> RunClock:
    return RunClock(AS_OF)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> pathlib.Path:
    """3,000 generated transactions, 5% of them invalid, with reference files and labels."""
    out = tmp_path_factory.mktemp("dataset")
    generate.generate(3000, seed=5, invalid_fraction=0.05, out=out)
    return out


@pytest.fixture(scope="session")
def buf() -> str:
    path = ROOT / "node_modules" / ".bin" / "buf"
    found = str(path) if path.exists() else shutil.which("buf")
    need(found is not None, "buf is not installed: run `npm ci` (package.json pins @bufbuild/buf)")
    return found


@pytest.fixture(scope="session")
def prism_binary() -> str:
    """Beam's Prism runner, built by the project's own scripts/prism.sh when it is not cached yet."""
    from pipeline.local import prism

    try:
        return prism.ensure()
    except prism.PrismMissingError as exc:
        need(False, str(exc))
        raise


@pytest.fixture
def config_dir(tmp_path):
    """A copy of the default config whose paths point at the repository's sample data and model."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["input"]["transactions"] = str(ROOT / "data/sample/transactions.jsonl")
    data["reference"]["customers"] = str(ROOT / "data/sample/customers.jsonl")
    data["reference"]["merchants"] = str(ROOT / "data/sample/merchants.jsonl")
    data["predict"]["model"] = str(ROOT / "models/fraud-gbm-v2/model.onnx")
    data["output"]["dir"] = str(tmp_path / "out")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


# Markers by what a test needs (pyproject.toml lists them): `pytest -m "not (kafka or postgres or prism
# or flink or slow)"` runs the fast unit tests; CI runs everything.
_MARK_BY_FIXTURE = {"broker": "kafka", "pg": "postgres", "prism_binary": "prism"}
_MARK_BY_MODULE = {
    "test_kafka": ("kafka", "prism", "slow"),
    "test_crash": ("kafka", "prism", "slow"),
    "test_30_enrich_postgres": ("postgres",),
    "test_runners": ("flink", "slow"),
    "test_streaming": ("prism", "slow"),
    "test_fresh_setup": ("slow",),
    "test_dataflow_template": ("slow",),
    "test_bench": ("slow",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(_MARK_BY_MODULE.get(item.module.__name__.rsplit(".", 1)[-1], ()))
        names |= {mark for fixture, mark in _MARK_BY_FIXTURE.items() if fixture in item.fixturenames}
        for name in sorted(names):
            item.add_marker(getattr(pytest.mark, name))
