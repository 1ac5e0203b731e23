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


def test_the_cpu_sampler_counts_what_a_matching_process_used_and_nothing_of_others():
    import subprocess
    import sys

    from bench.cpu import CpuSampler, per_record_us

    # The child burns half a second of CPU (not of wall time: a loaded machine only makes it take
    # longer), then sleeps so that a sample sees its final count before it exits.
    burn = "import time\nwhile time.process_time() < 0.5: pass\ntime.sleep(2.0)\n"
    marker = "riskpipe-cpu-sampler-test"
    with CpuSampler({"burner": lambda c: marker in c, "nothing": lambda c: "no-such-process-xyz" in c}) as cpu:
        subprocess.run([sys.executable, "-c", burn, marker], check=True)
        # while sampling: what was used so far (the child's sleep gave the sampler its final count)
        assert 0.45 <= cpu.totals()["burner"] <= 1.0
    assert 0.45 <= cpu.seconds["burner"] <= 1.0
    assert cpu.seconds["nothing"] == 0.0
    assert per_record_us({"a": 3.0, "b": 1.0}, {"a": 1.0}, 1000) == {"a": 2000.0, "b": 1000.0}
