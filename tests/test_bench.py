"""The benchmark scripts run and hold their checks (their timings are reported, never asserted)."""

import json

from bench import postgres, scale
from tests.conftest import need


def test_every_malformed_kind_at_scale_gets_its_code_and_the_run_balances(tmp_path, capsys):
    assert scale.main(["--records", "50000", "--invalid-fraction", "0.1", "--work-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lines off: 0" in out and "balanced: yes" in out


def test_the_profile_store_benchmark_runs_and_every_output_matches_the_plain_loop(tmp_path, capsys):
    from tools.postgres_server import PostgresMissingError, bin_dir

    try:
        bin_dir()
    except PostgresMissingError as exc:
        need(False, str(exc))
    assert postgres.main(["--records", "3000", "--cards", "300", "--work-dir", str(tmp_path)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["balanced"] and all(figures["outputs_identical"].values())
    assert figures["queries_per_10k_cold"] > 0 == figures["queries_per_10k_warm"]
