"""The whole job as one plain-Python loop in one process: the benchmark's baseline.

It calls the same stage functions the Beam job runs (00_source's read_lines, 10_validate's
TransactionParser, 20_dedupe's fingerprint and conflict (first copy in input order: the job picks
the earliest event time, the same copy when a data set's copies come in time order), 30_enrich's
read_profile_file and ProfileJoiner, 40_features' FeatureComputer,
50_predict's score_batch on the same single-threaded ONNX session, Decider, the sinks' JSON
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
from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, MerchantProfile
from pipeline.runner import resolve_model_version
from pipeline.shared import config as job_config
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import redact
from pipeline.shared.json_codec import dead_letter_json, scored_json
from pipeline.stage_loader import load_stage

source = load_stage("00_source")
validate = load_stage("10_validate")
dedupe = load_stage("20_dedupe")
enrich = load_stage("30_enrich")
featurize = load_stage("40_features")
predict = load_stage("50_predict")


def run(config: job_config.JobConfig, model_version: str, output_dir: str) -> dict:
    started = time.perf_counter()
    clock = RunClock(config.as_of)
    spent: dict[str, float] = defaultdict(float)
    tick = time.perf_counter

    t = tick()
    customers = enrich.read_profile_file(config.customers, CustomerProfile, "card_id")
    merchants = enrich.read_profile_file(config.merchants, MerchantProfile, "merchant_id")
    parse = validate.TransactionParser(clock, config.max_future_skew_seconds)
    join = enrich.ProfileJoiner(config.missing_profile_policy, clock)
    compute = featurize.FeatureComputer(clock)
    session = predict.SingleThreadOnnxModelHandler(config.model, providers=["CPUExecutionProvider"]).load_model()
    thresholds = predict.Thresholds(config.thresholds_version, config.review_threshold, config.decline_threshold)
    decide = predict.Decider(model_version, thresholds, clock)
    spent["setup"] += tick() - t

    os.makedirs(f"{output_dir}/scored", exist_ok=True)
    os.makedirs(f"{output_dir}/dead_letters", exist_ok=True)
    read = scored = dead = duplicates = 0
    kept: dict[str, bytes] = {}
    batch: list = []
    with (
        open(f"{output_dir}/scored/part-plain.jsonl", "w", encoding="utf-8") as scored_out,
        open(f"{output_dir}/dead_letters/part-plain.jsonl", "w", encoding="utf-8") as dead_out,
    ):

        def refuse(letter: DeadLetter) -> None:
            nonlocal dead
            t = tick()
            dead_out.write(dead_letter_json(redact(letter, config.dead_letter_payload)) + "\n")
            dead += 1
            spent["90_dead_letter"] += tick() - t

        def flush() -> None:
            nonlocal scored
            t = tick()
            inputs = [predict.model_input(e) for e in batch]
            results = predict.score_batch(session, [x for _, x in inputs])
            outputs = [decide.decide(e, r) for e, r in zip(batch, results, strict=True)]
            spent["50_predict"] += tick() - t
            for out in outputs:
                if isinstance(out, DeadLetter):
                    refuse(out)
                    continue
                t = tick()
                scored_out.write(scored_json(out) + "\n")
                scored += 1
                spent["60_sink"] += tick() - t
            batch.clear()

        ranges = []
        for entry in source.match_files(config.transactions):
            if isinstance(entry, source.SourceError):
                refuse(source.source_dead_letter(entry, clock))
            else:
                ranges += source.split_file(entry.path, entry.size)
        for line_range in ranges:
            t = tick()
            for record in source.read_range(line_range, clock, config.max_record_bytes):
                if record is None:
                    continue
                if isinstance(record, source.SourceError):
                    refuse(source.source_dead_letter(record, clock))
                    continue
                if isinstance(record, DeadLetter):
                    read += 1
                    refuse(record)
                    continue
                read += 1
                t1 = tick()
                spent["00_source"] += t1 - t
                out = parse(record)
                t2 = tick()
                spent["10_validate"] += t2 - t1
                if isinstance(out, DeadLetter):
                    refuse(out)
                    t = tick()
                    continue
                fingerprint = dedupe.fingerprint(out)
                first = kept.setdefault(out.transaction_id, fingerprint)
                t2b = tick()
                spent["20_dedupe"] += t2b - t2
                if first is not fingerprint:
                    if first == fingerprint:
                        duplicates += 1
                    else:
                        refuse(dedupe.conflict(out, config.dedupe_horizon_seconds, clock))
                    t = tick()
                    continue
                t2 = t2b
                out = join(out, customers, merchants)
                t3 = tick()
                spent["30_enrich"] += t3 - t2
                if isinstance(out, DeadLetter):
                    refuse(out)
                    t = tick()
                    continue
                out = compute(out)
                spent["40_features"] += tick() - t3
                if isinstance(out, DeadLetter):
                    refuse(out)
                else:
                    batch.append(out)
                    if len(batch) >= config.max_batch_size:
                        flush()
                t = tick()
        if batch:
            flush()
    elapsed = time.perf_counter() - started
    return {
        "records": read,
        "scored": scored,
        "dead_letters": dead,
        "duplicates": duplicates,
        "seconds": elapsed,
        "stage_seconds": dict(spent),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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
