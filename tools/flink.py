"""Beam's Flink job server jar for deploy/flink/submit.sh, and a look at a Flink cluster's REST API.

    python -m tools.flink jar                 # the job-server jar's path, or exit 1 saying what is missing
    python -m tools.flink overview [--rest URL]   # the cluster's /overview, or exit 1

Beam's FlinkRunner translates the job in a Java job server (`beam-runners-flink-<flink>-job-server`,
one jar per Flink minor version and Beam release) that submits it to the cluster. The jar is looked
for, in order: $FLINK_JOB_SERVER_JAR, the cache (~/.cache/riskpipe/flink-job-server/), then
Maven Central through `mvn dependency:copy` into that cache. Beam itself would download it from
Maven Central at submission when `--flink_job_server_jar` is not given; the job never lets it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.request
from typing import Any

import apache_beam.version

from pipeline.local import prism

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The cluster deploy/flink/cluster.sh starts, from the one place that names it.
FLINK_VERSION = re.search(
    r"^FLINK_VERSION_DEFAULT=(\S+)", (ROOT / "deploy" / "flink" / "versions.sh").read_text(), re.M
).group(1)  # type: ignore[union-attr]
FLINK_MINOR = ".".join(FLINK_VERSION.split(".")[:2])  # what --flink_version names
JAR_ENV = "FLINK_JOB_SERVER_JAR"
_MAVEN_SETTINGS = ROOT / "scripts" / "kafka" / "maven-settings.xml"


class JobServerMissingError(RuntimeError):
    """No Flink job-server jar for this Beam release and Flink version can be had here."""


def artifact(flink_minor: str = FLINK_MINOR, beam: str = apache_beam.version.__version__) -> str:
    """The job server's Maven coordinates: it must be the SDK's own Beam release."""
    return f"org.apache.beam:beam-runners-flink-{flink_minor}-job-server:{beam}"


def cached_jar(flink_minor: str = FLINK_MINOR, beam: str = apache_beam.version.__version__) -> pathlib.Path:
    return prism.cache_root() / "flink-job-server" / f"beam-runners-flink-{flink_minor}-job-server-{beam}.jar"


def job_server_jar(
    flink_minor: str = FLINK_MINOR, resolve: bool = True, beam: str = apache_beam.version.__version__
) -> str:
    """The jar's path; JobServerMissingError naming the artifact when there is none. `beam`: the
    Beam release to look for (the SDK's own, unless probing which releases are served)."""
    named = os.environ.get(JAR_ENV)
    if named:
        if not os.path.isfile(named):
            raise JobServerMissingError(f"{JAR_ENV}={named}: no such file")
        return named
    jar = cached_jar(flink_minor, beam)
    if jar.is_file():
        return str(jar)
    coordinates = artifact(flink_minor, beam)
    tried = f"not in {jar.parent}"
    if resolve and shutil.which("mvn"):
        jar.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-U",  # ask again: Maven would otherwise repeat a cached "not found"
                "-s",
                str(_MAVEN_SETTINGS),
                f"-Dmaven.repo.local={prism.cache_root() / 'm2'}",
                "dependency:copy",
                f"-Dartifact={coordinates}:jar",
                f"-DoutputDirectory={jar.parent}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if done.returncode == 0 and jar.is_file():
            return str(jar)
        missing = any(
            text in done.stdout for text in ("Could not find artifact", "was not found", "Unable to find artifact")
        )
        tried += ", and Maven " + ("does not serve it" if missing else f"failed (exit {done.returncode})")
    elif resolve:
        tried += ", and Maven (mvn) is not installed"
    raise JobServerMissingError(
        f"Beam's Flink job server {coordinates} (jar) is not available: {tried}. "
        f"Set {JAR_ENV} to the jar, or pass --flink_job_server_jar=PATH_OR_URL"
    )


def rest(base: str, path: str, timeout: float = 5.0) -> Any:
    """GET a Flink REST endpoint and decode its JSON."""
    with urllib.request.urlopen(f"{base.rstrip('/')}{path}", timeout=timeout) as response:
        return json.load(response)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.flink", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["jar", "overview"])
    parser.add_argument("--flink_version", default=FLINK_MINOR, help="Flink minor version, as --flink_version")
    parser.add_argument("--beam", default=apache_beam.version.__version__, help="Beam release (default: the SDK's)")
    parser.add_argument("--rest", default=f"http://127.0.0.1:{os.environ.get('FLINK_REST_PORT', '8081')}")
    args = parser.parse_args(argv)
    if args.what == "jar":
        try:
            print(job_server_jar(args.flink_version, beam=args.beam))
        except JobServerMissingError as exc:
            print(f"flink: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        print(json.dumps(rest(args.rest, "/overview"), indent=2))
    except OSError as exc:
        print(f"flink: no cluster answers on {args.rest}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
