"""Architecture check for the stage files, the part import-linter cannot see.

Stage files start with digits, so a stage could only reach another stage through importlib,
__import__ or runpy; this check forbids those in stages outright. It also checks that

- every stage file is named NN_name.py with a two-digit sequence number, numbers unique;
- a stage imports only contracts, pipeline.shared, the standard library and third-party
  packages (never pipeline.runner, pipeline.stage_loader, tools, bench or tests);
- a stage's docstring says what comes in, what goes out and which dead letters it emits.

    python -m tools.check_stages [STAGES_DIR]
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

STAGES_DIR = pathlib.Path(__file__).resolve().parent.parent / "pipeline" / "stages"
NAME = re.compile(r"^(\d{2})_[a-z][a-z0-9_]*\.py$")
FORBIDDEN_MODULES = ("importlib", "runpy", "imp", "pkgutil")
FORBIDDEN_CALLS = ("__import__", "exec", "eval", "import_module")
FIRST_PARTY = ("pipeline", "contracts", "tools", "bench", "tests")
ALLOWED_FIRST_PARTY = ("contracts", "pipeline.shared")


def _allowed(module: str) -> bool:
    root = module.split(".")[0]
    if root in FORBIDDEN_MODULES:
        return False
    if root not in FIRST_PARTY:
        return True
    return any(module == prefix or module.startswith(prefix + ".") for prefix in ALLOWED_FIRST_PARTY)


def check_file(path: pathlib.Path) -> list[str]:
    problems = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    doc = ast.get_docstring(tree) or ""
    for heading in ("In:", "Out:", "Dead letters"):
        if heading not in doc:
            problems.append(f"{path.name}: docstring does not say {heading!r}")
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                problems.append(f"{path.name}:{node.lineno}: relative import (stages import by absolute name)")
                continue
            modules = [node.module or ""]
            if node.module == "pipeline":
                modules = [f"pipeline.{alias.name}" for alias in node.names]
        for module in modules:
            if not _allowed(module):
                problems.append(f"{path.name}:{getattr(node, 'lineno', 0)}: imports {module}")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in FORBIDDEN_CALLS:
                problems.append(f"{path.name}:{getattr(node, 'lineno', 0)}: calls {name}()")
        if isinstance(node, ast.Name) and node.id == "__import__":
            problems.append(f"{path.name}:{getattr(node, 'lineno', 0)}: uses __import__")
    return problems


def check(stages_dir: pathlib.Path = STAGES_DIR) -> list[str]:
    problems = []
    numbers: dict[str, str] = {}
    for path in sorted(stages_dir.glob("*.py")):
        if path.name == "__init__.py":
            continue
        match = NAME.match(path.name)
        if not match:
            problems.append(f"{path.name}: stage files are named NN_name.py")
            continue
        if match.group(1) in numbers:
            problems.append(f"{path.name}: sequence number {match.group(1)} already used by {numbers[match.group(1)]}")
        numbers[match.group(1)] = path.name
        problems.extend(check_file(path))
    if not numbers:
        problems.append(f"{stages_dir}: no stage files")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stages_dir = pathlib.Path(args[0]) if args else STAGES_DIR
    problems = check(stages_dir)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"stages: {len(list(stages_dir.glob('[0-9][0-9]_*.py')))} stage files, imports and names in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
