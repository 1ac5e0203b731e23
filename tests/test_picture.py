"""--render_graph: the job's graph as built for a configuration, drawn without running it."""

import shutil

from pipeline import runner
from tests.conftest import ROOT, need
from tests.helpers import job_config
from tools import graph_picture


def test_render_graph_draws_an_svg_and_runs_nothing(dataset, tmp_path, capsys):
    need(shutil.which("dot") is not None, "Graphviz is not installed (scripts/apt_tool.sh dot graphviz installs it)")
    out, svg = tmp_path / "out", tmp_path / "graph.svg"
    assert runner.main(["--config", job_config(dataset, out), "--render_graph", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for stage in ("00_source", "35_velocity", "50_predict", "90_dead_letter", "dead letters"):
        assert stage in text
    assert not out.exists(), "nothing ran: no output folder"
    assert "the job's graph" in capsys.readouterr().out


def test_the_picture_follows_the_configuration(dataset, tmp_path):
    stateless = ROOT / "models" / "fraud-gbm-stateless-v2" / "model.onnx"
    dot = runner.render(
        ["--config", job_config(dataset, tmp_path / "out", predict__model=str(stateless))], str(tmp_path / "g.dot")
    )
    assert '"30_enrich" -> "40_features" [label="EnrichedTransaction"' in dot  # no 35_velocity for fs-v1
    assert "35_velocity" not in dot
    watch = tmp_path / "in"
    watch.mkdir()
    config = job_config(dataset, tmp_path / "out2", source__kind="watch", source__watch_dir=str(watch))
    dot = runner.render(["--config", config], str(tmp_path / "w.dot"))
    assert "watched folder" in dot and '"10_validate" -> "AllDeadLetters"' in dot


def test_the_docs_picture_is_the_default_graph():
    assert (ROOT / "docs" / "graph.dot").read_text() == graph_picture.current()
