"""Drop transactions into a watched folder over time, as a live feed would, with redeliveries.

    python -m tools.stream_files --data data/sample --rate 500 --out /tmp/incoming

Reads DIR/transactions.jsonl (the generator's layout) and writes its lines into FOLDER as numbered
files (`part-000001.jsonl`, ...), one file every --file_seconds at --rate records a second. Each
file is written as `NAME.tmp` and renamed when complete, the rule the job's watched folder relies
on. The line bytes are kept as they are, except that a well-formed `"event_time":"...Z"` is
rewritten to the moment the line is dropped (minus up to --jitter_seconds), so that the feed is
live and its event times are close to the job's watermark; event times more than a day in the
future or before 2000 (the generator's invalid records) keep their distance from the data's newest
valid time, so they stay invalid.
A fraction of lines (--redeliver) is written a second time, byte for byte, in a later file: the
redeliveries an at-least-once source makes, which the job's 20_dedupe drops.

At the end it prints how many lines it wrote (and redelivered), and --manifest FILE records, for
each file, its name, its line count and the time it appeared (for the streaming benchmark).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import random
import re
import sys
import time

from pipeline.shared.clock import TIMESTAMP_MAX_SECONDS

_YEAR_2000 = 946684800  # the contract's earliest event_time
_EVENT_TIME = re.compile(rb'"event_time":"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z"')


def _parse(match: re.Match[bytes]) -> float:
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


def _format(seconds: float) -> bytes:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def out_of_range(seconds: float) -> bool:
    """An event time no producer could send: before 2000, or more than a day after today (the
    generator's deliberately invalid records)."""
    return seconds < _YEAR_2000 or seconds > time.time() + 86400


def _read_event_time(line: bytes) -> tuple[re.Match[bytes], float] | None:
    """The line's event_time field and its seconds; None when it has none that reads as a date."""
    match = _EVENT_TIME.search(line)
    if match is None:
        return None
    try:
        return match, _parse(match)
    except ValueError:
        return None  # not a calendar date: left for the job to refuse


def _event_seconds(line: bytes) -> float | None:
    """The line's event time, None when it has none that reads as a date or it is out of range."""
    found = _read_event_time(line)
    return None if found is None or out_of_range(found[1]) else found[1]


def newest_event_time(lines: list[bytes]) -> float:
    """The newest event time of the data that is not out of range."""
    return max((t for line in lines if (t := _event_seconds(line)) is not None), default=time.time())


def oldest_event_time(lines: list[bytes]) -> float:
    """The oldest event time of the data that is not out of range."""
    return min((t for line in lines if (t := _event_seconds(line)) is not None), default=time.time())


def in_event_time_order(lines: list[bytes]) -> list[bytes]:
    """The lines sorted by their event time, which they keep: a replay of the data as it happened
    (a backlog after an outage). A line without a readable event time stays after the line before
    it."""
    keyed: list[tuple[float, int, bytes]] = []
    last = 0.0
    for number, line in enumerate(lines):
        seconds = _event_seconds(line)
        if seconds is not None:
            last = seconds
        keyed.append((last, number, line))
    return [line for _, _, line in sorted(keyed)]


def rebase(line: bytes, now: float, newest: float, jitter: float, rng: random.Random) -> bytes:
    """The line with its event_time set to about `now`; an event time out of range keeps its
    offset from the data's newest time (so it stays out of range)."""
    found = _read_event_time(line)
    if found is None:
        return line
    match, original = found
    shifted = now + (original - newest) if out_of_range(original) else now - rng.uniform(0, jitter)
    if not _YEAR_2000 < shifted < TIMESTAMP_MAX_SECONDS:
        return line
    return line[: match.start()] + b'"event_time":"' + _format(shifted) + b'"' + line[match.end() :]


def write_file(folder: pathlib.Path, name: str, lines: list[bytes]) -> None:
    temporary = folder / f"{name}.tmp"
    with open(temporary, "wb") as f:
        f.writelines(lines)
    os.replace(temporary, folder / name)


def stream(
    data: pathlib.Path,
    out: pathlib.Path,
    rate: float,
    file_seconds: float = 1.0,
    redeliver: float = 0.01,
    jitter_seconds: float = 2.0,
    limit: int = 0,
    seed: int = 7,
    rebase_times: bool = True,
    per_file: int = 0,
) -> dict:
    """Writes the data into `out` as described above; `per_file` lines a file instead of
    rate × file_seconds (with file_seconds 0: every file at once)."""
    rng = random.Random(seed)
    lines = [line if line.endswith(b"\n") else line + b"\n" for line in (data / "transactions.jsonl").open("rb")]
    if limit:
        lines = lines[:limit]
    newest = newest_event_time(lines)
    out.mkdir(parents=True, exist_ok=True)
    per_file = per_file or max(1, round(rate * file_seconds))
    pending_redeliveries: list[bytes] = []
    files: list[dict] = []
    written = redelivered = 0
    start = time.monotonic()
    position = 0
    while position < len(lines) or pending_redeliveries:
        due = start + len(files) * file_seconds
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        batch = [
            rebase(line, now, newest, jitter_seconds, rng) if rebase_times else line
            for line in lines[position : position + per_file]
        ]
        position += len(batch)
        batch += pending_redeliveries
        pending_redeliveries = [line for line in batch if rng.random() < redeliver and position < len(lines)]
        redelivered += len(pending_redeliveries)
        name = f"part-{len(files) + 1:06d}.jsonl"
        write_file(out, name, batch)
        written += len(batch)
        files.append({"name": name, "lines": len(batch), "appeared": time.time()})
    return {"files": files, "lines_written": written, "redelivered": redelivered, "source_lines": len(lines)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stream_files", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=pathlib.Path("data/sample"), help="generator folder")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the watched folder")
    parser.add_argument("--rate", type=float, default=500.0, help="records a second")
    parser.add_argument("--file_seconds", type=float, default=1.0, help="one file every this many seconds")
    parser.add_argument("--redeliver", type=float, default=0.01, help="fraction of lines written twice")
    parser.add_argument("--jitter_seconds", type=float, default=2.0, help="event times up to this far behind")
    parser.add_argument("--limit", type=int, default=0, help="only the first N lines (0: all)")
    parser.add_argument("--keep_event_times", action="store_true", help="write event times as they are")
    parser.add_argument("--manifest", type=pathlib.Path, help="write what was dropped when, as JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.file_seconds <= 0:
        parser.error("--rate and --file_seconds must be positive")
    if not (args.data / "transactions.jsonl").is_file():
        parser.error(f"--data: no transactions.jsonl in {args.data}")
    done = stream(
        args.data,
        args.out,
        args.rate,
        args.file_seconds,
        args.redeliver,
        args.jitter_seconds,
        args.limit,
        rebase_times=not args.keep_event_times,
    )
    if args.manifest:
        args.manifest.write_text(json.dumps(done, indent=1) + "\n")
    print(
        f"wrote {done['lines_written']:,} lines ({done['redelivered']:,} of them redeliveries) in "
        f"{len(done['files'])} files to {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
