"""Files generated from the code (the Flex Template's metadata.json, docs/configuration.md): written,
or checked for staleness (run_tests.sh runs every check)."""

from __future__ import annotations

import argparse
import difflib
import os
import pathlib
import sys
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(
    argv: list[str] | None, prog: str, doc: str, target: pathlib.Path, render: Callable[[], str], source: str
) -> int:
    """`prog [--check]`: write `target` from `render()`, or with --check exit 1 (with a diff) when
    the file is not what `source` gives."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render()
    name = os.path.relpath(target, ROOT)
    if not args.check:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {name}")
        return 0
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if current == text:
        print(f"{name}: up to date with {source}")
        return 0
    diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(name), f"from {source}", lineterm="")
    print("\n".join(list(diff)[:80]), file=sys.stderr)
    print(f"{name} is not what {source} give: run python -m {prog}", file=sys.stderr)
    return 1
