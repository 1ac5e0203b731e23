"""The Beam job, timed from inside its own process (imports excluded, as for the plain loop).

python -m bench.job --config CONFIG --output_dir DIR [--bench_runs=N] [Beam options]

With --bench_runs=N the job runs N times in this process, one after the other (a second run finds
the worker's profile-store cache warm), and the JSON has one object per run under "runs".
"""

from __future__ import annotations

import json
import resource
import sys
import time

from pipeline import runner


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    runs = 1
    for arg in list(args):
        if arg.startswith("--bench_runs="):
            runs = int(arg.split("=", 1)[1])
            args.remove(arg)
    figures = [once(args) for _ in range(runs)]
    print(json.dumps(figures[0] if runs == 1 else {"runs": figures}))
    return 0


def once(args: list[str]) -> dict:
    started = time.perf_counter()
    summary = runner.run(args)
    elapsed = time.perf_counter() - started
    return {
        "records": summary["read"],
        "scored": summary["scored"],
        "dead_letters": summary["dead_letters"],
        "balanced": summary["balanced"],
        "stage_msecs": summary["stage_msecs"],
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # with --direct_running_mode=multi_processing the workers are child processes
        "largest_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "profile_store": summary.get("profile_store"),
    }


if __name__ == "__main__":
    sys.exit(main())
