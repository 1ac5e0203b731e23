"""The protobuf contracts: generated code in sync, reference lists, buf lint and buf breaking."""

import csv
import re
import shutil
import subprocess

import iso4217
import pycountry
import pytest

from contracts.riskpipe.v1.transaction_pb2 import Money, Transaction
from pipeline.shared import reference
from tests.conftest import ROOT
from tools import contracts

BUF_CONFIG = str(ROOT / "contracts" / "buf.yaml")


def test_generated_code_matches_the_proto_files():
    assert contracts.check() == 0


def test_generated_code_drift_is_detected(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    generated = tmp_path / "contracts" / "riskpipe" / "v1" / "transaction_pb2.py"
    generated.write_text(generated.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(contracts, "CONTRACTS", tmp_path / "contracts")
    monkeypatch.setattr(contracts, "ROOT", tmp_path)
    assert contracts.check() == 1


def _rule_list(message, field) -> set[str]:
    rules = message.DESCRIPTOR.fields_by_name[field].GetOptions()
    text = str(rules)
    return set(re.findall(r'in: "([A-Z]+)"', text))


def test_currency_rule_is_the_iso_4217_list_with_minor_units():
    assert _rule_list(Money, "currency") == set(reference.currency_minor_units())
    package = {c.code: c.exponent for c in iso4217.Currency if c.exponent is not None}
    assert reference.currency_minor_units() == package
    assert reference.currency_minor_units()["JPY"] == 0 and reference.currency_minor_units()["KWD"] == 3


def test_country_rule_is_the_iso_3166_list():
    assert _rule_list(Transaction, "country") == set(reference.countries())
    assert reference.countries() == {c.alpha_2 for c in pycountry.countries}


def test_every_reference_fx_currency_is_an_iso_currency():
    with open(ROOT / "pipeline/shared/reference/fx_eur.csv") as f:
        assert {r["currency"] for r in csv.DictReader(f)} <= set(reference.currency_minor_units())


def test_buf_lint(buf, tmp_path):
    image = contracts.image(tmp_path / "image.binpb")
    result = subprocess.run(
        [buf, "lint", str(image), "--config", BUF_CONFIG, "--path", "riskpipe/v1"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_released_contract(buf, tmp_path):
    image = contracts.image(tmp_path / "image.binpb")
    result = subprocess.run(
        [buf, "breaking", str(image), "--against", str(contracts.RELEASED), "--config", BUF_CONFIG],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("optional int64 minor_units = 1", "optional string minor_units = 1", "changed type"),
        ("string card_id = 2 [", "string card_number = 2 [", "name"),
        ("  ERROR_CODE_PROFILE_NOT_FOUND = 9;\n", "", "deleted"),
    ],
)
def test_a_breaking_change_is_caught(buf, tmp_path, old, new, reason):
    changed = tmp_path / "contracts"
    shutil.copytree(ROOT / "contracts", changed)
    for proto in (changed / "riskpipe" / "v1").glob("*.proto"):
        proto.write_text(proto.read_text().replace(old, new))
    image = contracts.image(tmp_path / "image.binpb", changed)
    result = subprocess.run(
        [buf, "breaking", str(image), "--against", str(contracts.RELEASED), "--config", BUF_CONFIG],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert reason in result.stdout.lower() + result.stderr.lower()
