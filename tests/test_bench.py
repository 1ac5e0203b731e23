"""The benchmark scripts run and hold their checks (their timings are reported, never asserted)."""

from bench import scale


def test_every_malformed_kind_at_scale_gets_its_code_and_the_run_balances(tmp_path, capsys):
    assert scale.main(["--records", "50000", "--invalid-fraction", "0.1", "--work-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lines off: 0" in out and "balanced: yes" in out
