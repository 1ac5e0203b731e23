"""Setup works from nothing: every first-time build path of the setup scripts (Kafka's jars and a
broker, the expansion service, Prism, the Flink distribution, PostgreSQL) on an empty cache, through
scripts/check_fresh_setup.sh (which reuses only the Maven, Go and pip download caches)."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import ROOT, need


def test_every_setup_script_works_on_an_empty_cache():
    for tool in ("java", "mvn", "go"):
        need(shutil.which(tool) is not None, f"{tool} is not installed: the setup scripts need it")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_fresh_setup.sh")], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "every first-time path worked" in done.stderr
