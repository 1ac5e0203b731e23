"""The runner's command line: help, exit codes, the summary table, and multi-process runs."""

import pytest

from pipeline import runner
from pipeline import summary as run_summary
from tests.conftest import AS_OF, ROOT
from tests.helpers import read_jsonl


def test_help_lists_every_config_option(capsys):
    assert runner.main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--config", "--input", "--output_dir", "--missing_profile_policy", "--decline_threshold", "--as_of"):
        assert option in out


def test_help_groups_the_options_by_section_with_defaults_and_says_how_beams_pass(capsys):
    from pipeline import config

    assert runner.main(["--help"]) == 0
    out = capsys.readouterr().out
    sections = [line.split(" (config section)")[0] for line in out.splitlines() if line.endswith("(config section):")]
    assert sections == list(dict.fromkeys(s.section for s in config.settings()))
    for setting in config.settings():
        assert f"--{setting.option}" in out
    assert "(default: 0.9)" in out and "--source {files,watch,kafka,pubsub}" in out
    assert "Beam's own pipeline options pass through" in out and "--flink_master" in out


def test_an_unbalanced_run_exits_one(monkeypatch, capsys):
    summary = {
        "read": 10,
        "scored": 8,
        "dead_letters": 1,
        "dead_letters_by_code": {"ERROR_CODE_MALFORMED_JSON": 1},
        "duplicates": 0,
        "balanced": False,
        "default_profiles_used": {"customer": 0, "merchant": 0},
        "reference_rows_rejected": 0,
        "output_dir": "x",
    }
    monkeypatch.setattr(runner, "run", lambda argv: summary)
    assert runner.main(["--config", "config.yaml"]) == 1
    assert "balanced" in capsys.readouterr().out and "NO" in run_summary.format_summary(summary)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi_processing"])
def test_several_worker_processes_give_the_same_records(tmp_path, mode):
    args = ["--config", str(ROOT / "config.yaml"), "--as_of", AS_OF.isoformat()]
    one = runner.run([*args, "--output_dir", str(tmp_path / "one")])
    two = runner.run(
        [*args, "--output_dir", str(tmp_path / "two"), "--direct_num_workers=2", f"--direct_running_mode={mode}"]
    )
    assert one["balanced"] and two["balanced"]
    assert {k: one[k] for k in ("read", "scored", "dead_letters", "dead_letters_by_code")} == {
        k: two[k] for k in ("read", "scored", "dead_letters", "dead_letters_by_code")
    }
    for sub in ("scored", "dead_letters"):
        assert read_jsonl(tmp_path / "one" / sub) == read_jsonl(tmp_path / "two" / sub)
