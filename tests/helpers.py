"""Builders for contract messages used across the stage tests."""

from __future__ import annotations

import glob

import yaml

from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, MerchantProfile
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from contracts.riskpipe.v1.transaction_pb2 import Channel, Money, Transaction
from pipeline import graph
from pipeline import options as job_options
from pipeline.local import runners
from tests.conftest import AS_OF, MODEL, ROOT

# A valid transaction in the job's input format.
GOOD = {
    "transaction_id": "t-1",
    "card_id": "c-1",
    "merchant_id": "m-1",
    "amount": {"minor_units": 1999, "currency": "EUR"},
    "event_time": "2026-11-03T14:22:05.250+01:00",
    "channel": "ECOMMERCE",
    "mcc": "5732",
    "country": "FR",
    "device_id": "d-9",
}


def transaction(
    txn_id="t-1",
    card="c-1",
    merchant="m-1",
    minor=5000,
    currency="EUR",
    seconds=1793712125,
    channel=Channel.CHANNEL_POS,
    mcc="5411",
    country="FR",
    line=1,
) -> Transaction:
    txn = Transaction(
        transaction_id=txn_id,
        card_id=card,
        merchant_id=merchant,
        amount=Money(minor_units=minor, currency=currency),
        channel=channel,
        mcc=mcc,
        country=country,
    )
    txn.event_time.seconds = seconds
    txn.origin.CopyFrom(
        RawRecord(
            payload=f'{{"transaction_id": "{txn_id}"}}'.encode(), source=SourcePosition(uri="in.jsonl", line=line)
        )
    )
    return txn


def customer(
    card="c-1", country="FR", lat=48.85, lon=2.35, usual_minor=2500, currency="EUR", timezone="Europe/Paris", age=400
) -> CustomerProfile:
    return CustomerProfile(
        card_id=card,
        home_country=country,
        home_lat=lat,
        home_lon=lon,
        usual_amount=Money(minor_units=usual_minor, currency=currency),
        timezone=timezone,
        account_age_days=age,
    )


def merchant(
    merchant_id="m-1", mcc="5411", country="FR", lat=45.76, lon=4.83, risk=0.02, timezone="Europe/Paris"
) -> MerchantProfile:
    return MerchantProfile(
        merchant_id=merchant_id,
        name="Shop",
        mcc=mcc,
        country=country,
        lat=lat,
        lon=lon,
        risk_score=risk,
        timezone=timezone,
    )


def test_settings(dataset, out, **overrides) -> dict:
    """The test job's settings by dotted key: config.yaml's, on the test data, with `overrides`
    (section__name=value; None removes a key)."""
    from pipeline import config as job_config_module

    values = job_config_module.read_file(ROOT / "config.yaml")
    values.update(
        {
            "input.transactions": str(dataset / "transactions.jsonl"),
            "reference.customers": str(dataset / "customers.jsonl"),
            "reference.merchants": str(dataset / "merchants.jsonl"),
            "predict.model": str(MODEL),
            "output.dir": str(out),
            "run.as_of": AS_OF.isoformat(),
            "validate.max_future_skew_seconds": 300,
        }
    )
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return {key: value for key, value in values.items() if value is not None}


def typed_config(dataset, out, **overrides):
    """The test job's configuration as a typed JobConfig, checked as a run checks it; no file written."""
    from pipeline import config as job_config_module
    from pipeline.config import files

    config = job_config_module.build(test_settings(dataset, out, **overrides))
    files.check(config)
    return config


def job_config(dataset, out, **overrides):
    """The test job's configuration as a config file (for tests that run the job from its command line)."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["input"]["transactions"] = str(dataset / "transactions.jsonl")
    data["reference"]["customers"] = str(dataset / "customers.jsonl")
    data["reference"]["merchants"] = str(dataset / "merchants.jsonl")
    data["predict"]["model"] = str(MODEL)
    data["output"]["dir"] = str(out)
    data["run"]["as_of"] = AS_OF.isoformat()
    data["validate"]["max_future_skew_seconds"] = 300
    for key, value in overrides.items():
        section, name = key.split("__")
        data[section][name] = value
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def read_jsonl(folder):
    return sorted(line for f in glob.glob(str(folder / "*.jsonl")) for line in open(f, encoding="utf-8"))


def with_features(clock, records):
    """EnrichedTransactions with the default feature set's vector, their velocity features worked
    out per card in event-time order by the shared code, as 35_velocity and 40_features would."""
    from pipeline.shared import velocity
    from pipeline.stages import s40_features

    computer = s40_features.FeatureComputer(clock)
    histories: dict = {}
    out = {}
    for event, record in sorted(((velocity.event_of(r), r) for r in records), key=lambda pair: pair[0]):
        history = histories.setdefault(record.transaction.card_id, velocity.CardHistory())
        velocity.attach(record, history.take(event))
        out[record.transaction.transaction_id] = computer(record)
    return [out[r.transaction.transaction_id] for r in records]


DATAFLOW_IMAGE = "europe-docker.pkg.dev/riskpipe-test/riskpipe/riskpipe:2.77.0"


def dataflow_dry_run(config_path: str, *args: str):
    """Builds the job for the DataflowRunner with Beam's --dry_run (the job is translated into its
    Dataflow job description and not submitted); returns the pipeline and the job description."""
    import apache_beam as beam
    from apache_beam.runners.runner import PipelineState

    from pipeline import config as job_config_module

    options = job_options.parse_options(
        [
            "--config",
            config_path,
            "--runner=DataflowRunner",
            "--project=riskpipe-test",
            "--region=europe-west1",
            "--temp_location=gs://riskpipe-test/tmp",
            f"--sdk_container_image={DATAFLOW_IMAGE}",
            "--sdk_location=container",
            "--dry_run=true",
            *args,
        ]
    )
    config = job_config_module.load(config_path)
    name = runners.choose_runner(options, config.is_streaming, config.uses_kafka, config.source.kind)
    assert name == "DataflowRunner"
    p = beam.Pipeline(options=options)
    graph.build_pipeline(p, config, graph.Model("v-test"))
    result = p.run()
    assert result.state == PipelineState.DONE
    return p, result.job


class FakeBag:
    """A bag state object as a stateful DoFn sees it; counts reads."""

    def __init__(self):
        self.items: list = []
        self.reads = 0

    def read(self):
        self.reads += 1
        return list(self.items)

    def add(self, item):
        self.items.append(item)

    def clear(self):
        self.items = []


class FakeValue:
    def __init__(self):
        self.value = None

    def read(self):
        return self.value

    def write(self, value):
        self.value = value
