"""What reasons and a shadow model cost: the job and the plain loop with predict.explain none,
decisions and all, and with a challenger in shadow.

    python -m bench.explain [--records 200000] [--seed 17]

On one generated data set (cached under .bench/), each in its own process, one after the other:
for each of explain none, decisions (REVIEW and DECLINE carry reasons, the default), all, and
none with the stateless model as predict.shadow_model, the plain-Python loop (bench.plain) and the
job (bench.job, FnApiRunner), with the default model; the plain loop's and the job's outputs must
be identical for each. Reports records/s, each run's rate as a ratio to the same program with
explain none and no shadow, the job's ratio to the plain loop, and how many records carried
reasons. Prints a table and one JSON line.
Timings vary with the machine's load: compare figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import yaml

from bench.run import ROOT, dataset, plain_and_job, write_config

STATELESS_MODEL = "models/fraud-gbm-stateless-v2/model.onnx"
# run name -> predict settings
MODES = {
    "none": {"explain": "none"},
    "decisions": {"explain": "decisions"},
    "all": {"explain": "all"},
    "none + shadow": {"explain": "none", "shadow_model": str(ROOT / STATELESS_MODEL)},
}


def with_reasons(folder: pathlib.Path) -> int:
    return sum(1 for path in (folder / "scored").glob("*.jsonl") for line in path.open() if '"reasons":' in line)


def side(work: pathlib.Path, data: pathlib.Path, mode: str) -> dict:
    name = "explain-" + mode.replace(" + ", "-")
    config = write_config(work, data, None, name)
    settings = yaml.safe_load(config.read_text())
    settings["predict"].update(MODES[mode])
    config.write_text(yaml.safe_dump(settings))
    out = plain_and_job(work, config, name, with_reasons)
    out["with_reasons"] = out.pop("inspected")
    return out


def rps(figures: dict) -> float:
    return figures["records"] / figures["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / ".bench")
    args = parser.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data, _ = dataset(work, args.records, args.seed, 0.02)
    runs = {mode: side(work, data, mode) for mode in MODES}
    base = runs["none"]
    print(f"{args.records:,} records (2% invalid), default model; FnApiRunner, one process each\n")
    print(
        "| run | records with reasons | plain loop records/s | job records/s "
        "| plain / none | job / none | job / plain |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, run in runs.items():
        print(
            f"| {mode} | {run['with_reasons']:,} | {rps(run['plain']):,.0f} | {rps(run['job']):,.0f} | "
            f"{rps(run['plain']) / rps(base['plain']):.2f} | {rps(run['job']) / rps(base['job']):.2f} | "
            f"{rps(run['job']) / rps(run['plain']):.2f} |"
        )
    identical = all(run["identical"] for run in runs.values())
    print(f"\noutputs identical to the plain loop in every mode: {identical}")
    print(
        json.dumps(
            {
                "records": args.records,
                **{
                    mode: {
                        "with_reasons": run["with_reasons"],
                        "plain_records_per_s": round(rps(run["plain"])),
                        "job_records_per_s": round(rps(run["job"])),
                        "job_over_none": round(rps(run["job"]) / rps(base["job"]), 3),
                        "plain_over_none": round(rps(run["plain"]) / rps(base["plain"]), 3),
                        "job_over_plain": round(rps(run["job"]) / rps(run["plain"]), 3),
                        "balanced": run["job"]["balanced"],
                    }
                    for mode, run in runs.items()
                },
                "outputs_identical": identical,
            }
        )
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
