"""What the run report and the metrics endpoint cost the job: records/s with and without them, in one
run, beside the plain loop doing the same work.

    python -m bench.monitoring [--records 150000] [--rounds 2] [--before REV]

Generates the data once (cached under .bench/), then, each in its own process, one after the other:
the plain loop (bench.plain), and the batch job (bench.job, FnApiRunner) three ways, in turn for
each round: without report and endpoint (output.report false: the baseline), with the report (the
default), and with the report and the endpoint (run.metrics_port) scraped once a second by this
process. With --before REV, also the job as it was at commit REV (a git worktree, the same
config): the cost of the counters the report and the metrics read, which every variant above
keeps. Prints each variant's best records/s, its cost against the baseline, and the time to
render report.html from the run's summary. Timings vary with the machine's load: compare figures
from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

from bench.run import ROOT, dataset, run_child, write_config
from pipeline import report
from pipeline.io.kafka_expansion import free_port
from pipeline.shared import model_check
from pipeline.shared.periodic import Every

VARIANTS: tuple[tuple[str, list[str] | None], ...] = (
    ("baseline", ["--report", "false"]),
    ("report", []),
    ("report + metrics, scraped 1/s", None),  # the port is chosen per run
)


class Scraper:
    """Scrapes /metrics once a second while the job runs; counts the answers."""

    def __init__(self, port: int):
        self._url = f"http://127.0.0.1:{port}/metrics"
        self.answers = 0
        self._ticks = Every(1.0, self._scrape, "metrics-scraper")

    def __enter__(self) -> Scraper:
        self._ticks.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticks.stop()

    def _scrape(self) -> None:
        try:
            with urllib.request.urlopen(self._url, timeout=2) as response:
                response.read()
            self.answers += 1
        except OSError:
            pass


def worktree(work: pathlib.Path, rev: str) -> pathlib.Path:
    """The project at commit `rev`, checked out under WORK (once)."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    folder = work / f"worktree-{sha[:10]}"
    if not folder.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), sha], cwd=ROOT, check=True, capture_output=True
        )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=150_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / ".bench")
    parser.add_argument("--before", help="a commit to run the job at too (before the counters were added)")
    args = parser.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data, _ = dataset(work, args.records, args.seed, 0.02)
    config = write_config(work, data, name="monitoring")
    plain_out = work / "monitoring-plain"
    shutil.rmtree(plain_out, ignore_errors=True)
    plain = run_child("bench.plain", ["--config", str(config), "--output_dir", str(plain_out)])
    shutil.rmtree(plain_out, ignore_errors=True)

    before = worktree(work, args.before) if args.before else None
    variants = list(VARIANTS) + ([(f"at {args.before}", [])] if before is not None else [])
    best: dict[str, float] = {}
    scrapes = 0
    summary_path = None
    for _ in range(args.rounds):
        for name, extra in variants:
            out = work / "monitoring-job"
            shutil.rmtree(out, ignore_errors=True)
            job_args = ["--config", str(config), "--output_dir", str(out), "--runner=FnApiRunner"]
            if before is not None and name == f"at {args.before}":
                old_config = write_config(work, data, name="monitoring-before", root=before)
                figures = run_child("bench.job", ["--config", str(old_config), *job_args[2:]], cwd=before)
            elif extra is None:
                port = free_port()
                with Scraper(port) as scraper:
                    figures = run_child("bench.job", [*job_args, "--metrics_port", str(port)])
                scrapes += scraper.answers
            else:
                figures = run_child("bench.job", [*job_args, *extra])
            assert figures["balanced"], figures
            rate = figures["records"] / figures["seconds"]
            best[name] = max(best.get(name, 0.0), rate)
            if name == "report":
                summary_path = work / "monitoring-summary.json"
                shutil.copy(out / "summary.json", summary_path)
                page_bytes = (out / report.REPORT).stat().st_size
            shutil.rmtree(out, ignore_errors=True)

    assert summary_path is not None
    summary = json.loads(summary_path.read_text())
    card = model_check.read_model_card(str(ROOT / "models" / "fraud-gbm-v2" / "model.onnx"))
    started = time.perf_counter()
    report.render(summary, card, ("t", 0.5, 0.9), {}, [])
    render_seconds = time.perf_counter() - started

    plain_rate = plain["records"] / plain["seconds"]
    base = best["baseline"]
    print(f"{args.records:,} records (2% invalid), FnApiRunner, one process; best of {args.rounds} rounds\n")
    print("| run | records/s | against the baseline | against the plain loop |")
    print("|---|---|---|---|")
    print(f"| plain loop | {plain_rate:,.0f} | | 1.00 |")
    for name, rate in best.items():
        print(f"| job, {name} | {rate:,.0f} | {rate / base:.3f} | {rate / plain_rate:.2f} |")
    print(f"\nreport.html: {page_bytes / 1e6:.1f} MB, rendered in {render_seconds:.2f} s from the summary")
    print(f"scrapes answered while the job ran: {scrapes}")
    costs = {name: round(1 - rate / base, 4) for name, rate in best.items() if name != "baseline"}
    print(
        json.dumps(
            {
                "records": args.records,
                "plain_records_per_s": round(plain_rate),
                "job_records_per_s": {name: round(rate) for name, rate in best.items()},
                "cost_against_baseline": costs,
                "report_bytes": page_bytes,
                "report_render_seconds": round(render_seconds, 3),
                "scrapes": scrapes,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
