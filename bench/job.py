"""The Beam job, timed from inside its own process (imports excluded, as for the plain loop).

python -m bench.job --config CONFIG --output_dir DIR [Beam options]
"""

from __future__ import annotations

import json
import resource
import sys
import time

from pipeline import runner


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    summary = runner.run(args)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "records": summary["read"],
                "scored": summary["scored"],
                "dead_letters": summary["dead_letters"],
                "balanced": summary["balanced"],
                "stage_msecs": summary["stage_msecs"],
                "seconds": elapsed,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                # with --direct_running_mode=multi_processing the workers are child processes
                "largest_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
