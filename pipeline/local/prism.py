"""Beam's Prism runner: where the project's setup puts it, and the options that make a run use it.

Prism is Beam's portable runner written in Go, the local runner for streaming. Beam's Python SDK
downloads a Prism binary from the internet when it is not given one (`--prism_location`); the job
never lets it: scripts/prism.sh builds Prism from the Go module proxy once and caches it, and every
run that uses Prism is given that binary (or the one `RISKPIPE_PRISM` names).
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import apache_beam.version

PRISM_VERSION = f"v{apache_beam.version.__version__}"  # Prism must be the SDK's own version
PRISM_RUNNERS = ("PrismRunner", "DirectRunner")  # the DirectRunner tries Prism first
NO_SPLITS = "prism_disable_sdf_split"  # Prism's experiment that turns off its dynamic bundle splits
_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "prism.sh"


class PrismMissingError(RuntimeError):
    """No Prism binary where the project's setup puts it."""


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("RISKPIPE_CACHE") or pathlib.Path.home() / ".cache" / "riskpipe")


def binary_path() -> pathlib.Path:
    """Where the binary is: $RISKPIPE_PRISM, or the cache scripts/prism.sh fills."""
    named = os.environ.get("RISKPIPE_PRISM")
    if named:
        return pathlib.Path(named)
    return cache_root() / "prism" / PRISM_VERSION / "bin" / "prism"


def find() -> str:
    """The Prism binary to run; PrismMissingError when it has not been built."""
    path = binary_path()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    raise PrismMissingError(
        f"Beam's Prism runner {PRISM_VERSION} is not built (looked for {path}); build it once with "
        f"scripts/prism.sh (Go from the module proxy, about two minutes), or set RISKPIPE_PRISM to a binary"
    )


def ensure() -> str:
    """The Prism binary, built first by scripts/prism.sh when it is missing."""
    try:
        return find()
    except PrismMissingError:
        if os.environ.get("RISKPIPE_PRISM") or not _SCRIPT.is_file():
            raise
    env = dict(os.environ, PRISM_VERSION=PRISM_VERSION, RISKPIPE_CACHE=str(cache_root()))
    done = subprocess.run(["bash", str(_SCRIPT)], env=env, stdout=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise PrismMissingError(f"scripts/prism.sh could not build Prism {PRISM_VERSION} (exit {done.returncode})")
    return find()
