"""Turn dead letters back into input lines, to run them through the job again once fixed.

    python -m tools.replay --dead-letters 'output/local/dead_letters/*.jsonl' --out replay.jsonl
                           [--code ERROR_CODE_PROFILE_NOT_FOUND ...] [--stage 30_enrich ...]

Writes the original payload bytes of every selected dead letter, one per line, in source order
(file, then line), and prints how many it wrote per error code. The job then reads the file like
any other input: `./run_local.sh --input replay.jsonl --output_dir output/replay`.
Left out, and counted: SOURCE_UNREADABLE letters (not records: restore the file and run it again)
and letters written without their payload (dead_letter.payload: none).
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections import Counter

from google.protobuf import json_format

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode


def select(paths: list[str], codes: set[str], stages: set[str]) -> list[DeadLetter]:
    letters = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                letter = json_format.Parse(line, DeadLetter())
                if codes and ErrorCode.Name(letter.error_code) not in codes:
                    continue
                if stages and letter.stage not in stages:
                    continue
                letters.append(letter)
    letters.sort(key=lambda d: (d.source.uri, d.source.line, d.source.offset))
    return letters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dead-letters", required=True, help="glob of dead-letter JSONL files")
    parser.add_argument("--out", required=True)
    codes = [name for name in ErrorCode.keys() if name != "ERROR_CODE_UNSPECIFIED"]  # noqa: SIM118
    parser.add_argument("--code", action="append", default=[], choices=codes, metavar="ERROR_CODE_...")
    parser.add_argument("--stage", action="append", default=[])
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.dead_letters))
    if not paths:
        parser.error(f"no file matches {args.dead_letters!r}")
    letters: list[DeadLetter] = []
    skipped: Counter[str] = Counter()
    for letter in select(paths, set(args.code), set(args.stage)):
        if letter.error_code == ErrorCode.ERROR_CODE_SOURCE_UNREADABLE:
            skipped["source errors (not records)"] += 1
        elif not letter.payload:
            skipped["without payload"] += 1
        else:
            letters.append(letter)
    with open(args.out, "wb") as out:
        for letter in letters:
            out.write(letter.payload.replace(b"\n", b" ") + b"\n")
    for code, count in sorted(Counter(ErrorCode.Name(d.error_code) for d in letters).items()):
        print(f"{code:<40} {count:>8,}")
    print(f"{'written to ' + args.out:<40} {len(letters):>8,}")
    for reason, count in sorted(skipped.items()):
        print(f"{'left out: ' + reason:<40} {count:>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
