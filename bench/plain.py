"""The whole job as one plain-Python loop in one process: the benchmark's baseline.

It calls the same stage functions the Beam job runs (00_source's read_lines, 10_validate's
TransactionParser, 20_dedupe's fingerprint and conflict (first copy in input order: the job picks
the earliest event time, the same copy when a data set's copies come in time order), 30_enrich's
read_profile_file and ProfileJoiner, the velocity code of 35_velocity (per card, in event-time
order: a batch run holds the enriched records and sorts them, as the job's grouping does; a
streaming caller takes them in arrival order), 40_features' FeatureComputer,
50_predict's score_batch on the same single-threaded ONNX session and trees (reasons), Decider, the sinks' JSON
encoders), in batches of predict.max_batch_size, and writes the same two JSONL files. It prints
one JSON object: records, seconds, per-stage seconds, peak RSS.

    python -m bench.plain --config CONFIG --output_dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import defaultdict

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter
from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, EnrichedTransaction, MerchantProfile
from pipeline import config as job_config
from pipeline.graph import scoring_extras
from pipeline.io import files
from pipeline.launch import model_of, resolve_model_version
from pipeline.shared import feature_sets, model_check, velocity
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import redact
from pipeline.shared.json_codec import dead_letter_json, scored_json
from pipeline.stages import s10_validate as validate
from pipeline.stages import s20_dedupe as dedupe
from pipeline.stages import s30_enrich as enrich
from pipeline.stages import s40_features as featurize
from pipeline.stages import s50_predict as predict


class Tally:
    """A plain counter and distribution, in place of Beam's metrics."""

    def __init__(self) -> None:
        self.value: float = 0
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def update(self, value: float) -> None:
        self.count += 1
        self.value += value


class PlainScorer:
    """The stages as plain calls, one record at a time (predict in batches); `write_scored` and
    `refuse` take what leaves the job. Shared by this loop (files) and bench.kafka (topics)."""

    def __init__(self, config: job_config.JobConfig, model_version: str, write_scored, refuse, in_order: bool = True):
        self.spent: dict[str, float] = defaultdict(float)
        t = time.perf_counter()
        self._config = config
        self._clock = clock = RunClock(config.run.as_of)
        # enrich.backend postgres: 30_enrich's StoreJoiner on batches of enrich.postgres.batch_size
        # records, with plain tallies for its metrics; files: the reference files, read whole.
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        store = config.enrich.store
        self._store_join = (
            None
            if store is None
            else enrich.StoreJoiner(
                store, config.enrich.missing_profile_policy, clock, lambda _, name: self.tallies[name]
            )
        )
        self._store_batch = store.batch_size if store is not None else 0
        self._to_enrich: list = []
        if store is None:
            self._customers = enrich.read_profile_file(config.reference.customers or "", CustomerProfile, "card_id")
            self._merchants = enrich.read_profile_file(config.reference.merchants or "", MerchantProfile, "merchant_id")
        self._parse = validate.TransactionParser(clock, config.validate_.max_future_skew_seconds)
        self._join = enrich.ProfileJoiner(config.enrich.missing_profile_policy, clock)
        card = model_check.read_model_card(config.predict.model)
        model = model_of(config, config.predict.model, card, model_version)
        self._compute = featurize.FeatureComputer(clock, model.computed_set)
        self._velocity = feature_sets.uses_velocity(model.computed_set)
        self._in_order = in_order  # batch: hold the records and take each card's in event-time order
        # (card_id, event seconds, nanos, transaction_id, serialized record): compact, sorted as tuples
        self._held: list[tuple[str, int, int, str, bytes]] = []
        self.histories: dict[str, velocity.CardHistory] = defaultdict(velocity.CardHistory)
        thresholds = predict.Thresholds(config.thresholds.version, config.thresholds.review, config.thresholds.decline)
        extras = scoring_extras(config, model, thresholds)
        self._session = predict.SingleThreadOnnxModelHandler(
            config.predict.model, providers=["CPUExecutionProvider"], extras=extras
        ).load_model()
        shadow = model.shadow.version if model.shadow is not None else ""
        self._decide = predict.Decider(model_version, thresholds, clock, False, extras.feature_names, shadow)
        self._write_scored = write_scored
        self._refuse = refuse
        self._kept: dict[str, bytes] = {}
        self._batch: list = []
        self.read = self.scored = self.dead = self.duplicates = 0
        self.spent["setup"] += time.perf_counter() - t

    def refuse(self, letter: DeadLetter) -> None:
        t = time.perf_counter()
        self._refuse(redact(letter, self._config.dead_letter.payload))
        self.dead += 1
        self.spent["90_dead_letter"] += time.perf_counter() - t

    def flush(self) -> None:
        if not self._batch:
            return
        tick = time.perf_counter
        t = tick()
        inputs = [predict.model_input(e) for e in self._batch]
        results = predict.score_batch(self._session, [x for _, x in inputs])
        outputs = [self._decide.decide(e, r) for e, r in zip(self._batch, results, strict=True)]
        self.spent["50_predict"] += tick() - t
        for out in outputs:
            if isinstance(out, DeadLetter):
                self.refuse(out)
                continue
            t = tick()
            self._write_scored(out)
            self.scored += 1
            self.spent["60_sink"] += tick() - t
        self._batch.clear()

    def take(self, record) -> None:
        """One RawRecord (or a source's DeadLetter for a record it refused) through the stages."""
        tick = time.perf_counter
        self.read += 1
        if isinstance(record, DeadLetter):
            self.refuse(record)
            return
        spent = self.spent
        t1 = tick()
        out = self._parse(record)
        t2 = tick()
        spent["10_validate"] += t2 - t1
        if isinstance(out, DeadLetter):
            self.refuse(out)
            return
        fingerprint = dedupe.fingerprint(out)
        first = self._kept.setdefault(out.transaction_id, fingerprint)
        t3 = tick()
        spent["20_dedupe"] += t3 - t2
        if first is not fingerprint:
            if first == fingerprint:
                self.duplicates += 1
            else:
                self.refuse(dedupe.conflict(out, self._config.dedupe.horizon_seconds, self._clock))
            return
        if self._store_join is not None:
            self._to_enrich.append(out)
            if len(self._to_enrich) >= self._store_batch:
                self._enrich_held()
            spent["30_enrich"] += tick() - t3
            return
        out = self._join(out, self._customers, self._merchants)  # type: ignore[arg-type]  # profiles by key
        spent["30_enrich"] += tick() - t3
        self._enriched(out)

    def _enrich_held(self) -> None:
        """The records held for the profile store, looked up as one batch."""
        assert self._store_join is not None
        held, self._to_enrich = self._to_enrich, []
        for out in self._store_join(held) if held else ():
            self._enriched(out)

    def _enriched(self, out: EnrichedTransaction | DeadLetter) -> None:
        if isinstance(out, DeadLetter):
            self.refuse(out)
            return
        if self._velocity and self._in_order:
            txn = out.transaction
            key = (txn.card_id, txn.event_time.seconds, txn.event_time.nanos, txn.transaction_id)
            self._held.append((*key, out.SerializeToString()))
            return
        self._featurize(out)

    def _featurize(self, out: EnrichedTransaction) -> None:
        tick = time.perf_counter
        t = tick()
        if self._velocity:
            velocity.attach(out, self.histories[out.transaction.card_id].take(velocity.event_of(out)))
            now = tick()
            self.spent["35_velocity"] += now - t
            t = now
        result = self._compute(out)
        self.spent["40_features"] += tick() - t
        if isinstance(result, DeadLetter):
            self.refuse(result)
            return
        self._batch.append(result)
        if len(self._batch) >= self._config.predict.max_batch_size:
            self.flush()

    def finish(self) -> None:
        """The records held for the store, then those held for velocity, each card's in
        event-time order, then the last batch."""
        if self._store_join is not None:
            t = time.perf_counter()
            self._enrich_held()
            self.spent["30_enrich"] += time.perf_counter() - t
        t = time.perf_counter()
        self._held.sort()
        self.spent["35_velocity"] += time.perf_counter() - t
        for *_, data in self._held:
            t = time.perf_counter()
            out = EnrichedTransaction.FromString(data)
            self.spent["35_velocity"] += time.perf_counter() - t
            self._featurize(out)
        self._held.clear()
        self.flush()


def run(config: job_config.JobConfig, model_version: str, output_dir: str) -> dict:
    started = time.perf_counter()
    tick = time.perf_counter
    os.makedirs(f"{output_dir}/scored", exist_ok=True)
    os.makedirs(f"{output_dir}/dead_letters", exist_ok=True)
    with (
        open(f"{output_dir}/scored/part-plain.jsonl", "w", encoding="utf-8") as scored_out,
        open(f"{output_dir}/dead_letters/part-plain.jsonl", "w", encoding="utf-8") as dead_out,
    ):
        scorer = PlainScorer(
            config,
            model_version,
            lambda scored: scored_out.write(scored_json(scored) + "\n"),
            lambda letter: dead_out.write(dead_letter_json(letter) + "\n"),
        )
        clock = RunClock(config.run.as_of)
        ranges: list = []
        for entry in files.match_files(config.input.transactions or ""):
            if isinstance(entry, files.SourceError):
                scorer.refuse(files.source_dead_letter(entry, clock))
            else:
                ranges += files.split_file(entry.path, entry.size)
        for line_range in ranges:
            t = tick()
            for record in files.read_range(line_range, clock, config.input.max_record_bytes):
                scorer.spent["00_source"] += tick() - t
                if record is None:
                    pass
                elif isinstance(record, files.SourceError):
                    scorer.refuse(files.source_dead_letter(record, clock))
                else:
                    scorer.take(record)
                t = tick()
        scorer.finish()
    elapsed = time.perf_counter() - started
    return {
        "records": scorer.read,
        "scored": scorer.scored,
        "dead_letters": scorer.dead,
        "duplicates": scorer.duplicates,
        "seconds": elapsed,
        "stage_seconds": dict(scorer.spent),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # What 35_velocity's state would hold at the end: cards with a history, and their events.
        "velocity_cards": len(scorer.histories),
        "velocity_events_held": sum(len(h.events) for h in scorer.histories.values()),
        "profile_store": {name.removeprefix("profile_store."): tally.value for name, tally in scorer.tallies.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    config = job_config.load(args.config)
    print(json.dumps(run(config, resolve_model_version(config), args.output_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
