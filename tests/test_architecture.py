"""Architecture: import-linter contracts and the stage-file check, and proof that both bite."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tools import check_stages

LINT_IMPORTS = shutil.which("lint-imports", path=str(ROOT / ".venv" / "bin")) or shutil.which("lint-imports")


def run_lint_imports(cwd):
    assert LINT_IMPORTS, "lint-imports is not installed (pip install -e '.[dev]')"
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def copy_tree(tmp_path):
    for name in ("pipeline", "contracts"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_import_linter_contracts_are_kept():
    result = run_lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("path", "line", "broken"),
    [
        ("pipeline/stages/s40_features.py", "from pipeline import runner", "Layers"),
        ("pipeline/stages/s40_features.py", "from pipeline.stages import s30_enrich", "Stages are independent"),
        ("pipeline/shared/metrics.py", "import pipeline.runner", "Layers"),
        ("pipeline/io/files.py", "from pipeline.stages import s10_validate", "Layers"),
        ("pipeline/config/sections.py", "from pipeline.io import kafka", "Configuration imports no connector"),
        ("contracts/__init__.py", "import pipeline.shared.version", "Contracts import nothing"),
    ],
)
def test_import_linter_catches_a_forbidden_import(tmp_path, path, line, broken):
    tree = copy_tree(tmp_path)
    target = tree / path
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = run_lint_imports(tree)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout


def test_stage_files_pass_the_stage_check():
    assert check_stages.check() == []


def test_stage_check_wants_numbered_names_and_a_docstring(tmp_path):
    (tmp_path / "dedupe.py").write_text('"""In: Out: Dead letters"""\n')
    (tmp_path / "s20_a.py").write_text('"""In: Out: Dead letters"""\n')
    (tmp_path / "s20_b.py").write_text('"""nothing said"""\n')
    (tmp_path / "__init__.py").write_text('STAGES = ("20_a",)\n')
    problems = check_stages.check(tmp_path)
    assert any("named sNN_name.py" in p for p in problems)
    assert any("pipeline.stages.STAGES is" in p for p in problems)
    assert any("sequence number 20 already used" in p for p in problems)
    assert any("does not say 'In:'" in p for p in problems)


def test_stages_do_not_import_each_other_at_run_time():
    """Loading one stage must not load another (no hidden imports through helpers either)."""
    code = (
        "import importlib, sys; from pipeline.stages import STAGES\n"
        "for name in STAGES:\n"
        "    before = {m for m in sys.modules if m.startswith('pipeline.stages.s')}\n"
        "    importlib.import_module('pipeline.stages.s' + name)\n"
        "    loaded = {m for m in sys.modules if m.startswith('pipeline.stages.s')} - before\n"
        "    assert loaded == {'pipeline.stages.s' + name}, (name, loaded)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
