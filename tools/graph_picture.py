"""The default job's graph, drawn for the docs: docs/graph.dot and docs/graph.svg.

    python -m tools.graph_picture           # (re)write both (the SVG needs Graphviz's dot)
    python -m tools.graph_picture --check   # fail when docs/graph.dot is not the graph config.yaml builds

The check compares the DOT text (deterministic, no Graphviz needed); run_tests.sh runs it, so a
change to the graph that leaves the picture behind fails the suite.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

from pipeline import runner

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOT = ROOT / "docs" / "graph.dot"
SVG = ROOT / "docs" / "graph.svg"


def current() -> str:
    """The DOT of the job that config.yaml builds (from the project's folder, so paths are relative)."""
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as work:
        return runner.render(["--config", "config.yaml", "--runner=FnApiRunner"], os.path.join(work, "graph.dot"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    dot = current()
    if args.check:
        if not DOT.exists() or DOT.read_text() != dot:
            print(f"{DOT.relative_to(ROOT)}: stale; run python -m tools.graph_picture", file=sys.stderr)
            return 1
        print(f"{DOT.relative_to(ROOT)}: the graph config.yaml builds")
        return 0
    DOT.write_text(dot)
    runner.render(["--config", "config.yaml", "--runner=FnApiRunner"], str(SVG))
    print(f"wrote {DOT.relative_to(ROOT)} and {SVG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
