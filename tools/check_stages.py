"""Architecture check for the stage modules, the part import-linter does not see.

Stage modules are plain imports (import-linter checks who imports them and what they import);
this check keeps their names and order honest:

- every stage module is named sNN_name.py with a two-digit sequence number, numbers unique;
- pipeline.stages.STAGES lists them all, in their number's order, as NN_name;
- a stage's docstring says what comes in, what goes out and which dead letters it emits.

    python -m tools.check_stages [STAGES_DIR]
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

STAGES_DIR = pathlib.Path(__file__).resolve().parent.parent / "pipeline" / "stages"
NAME = re.compile(r"^s(\d{2})_[a-z][a-z0-9_]*\.py$")


def check_file(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    doc = ast.get_docstring(tree) or ""
    return [f"{path.name}: docstring does not say {h!r}" for h in ("In:", "Out:", "Dead letters") if h not in doc]


def listed_stages(stages_dir: pathlib.Path) -> list[str]:
    """The names pipeline.stages.STAGES lists (read from the file, not imported)."""
    init = stages_dir / "__init__.py"
    if not init.is_file():
        return []
    for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "STAGES" for t in node.targets):
            return [str(ast.literal_eval(e)) for e in getattr(node.value, "elts", [])]
    return []


def check(stages_dir: pathlib.Path = STAGES_DIR) -> list[str]:
    problems = []
    numbers: dict[str, str] = {}
    for path in sorted(stages_dir.glob("*.py")):
        if path.name == "__init__.py":
            continue
        match = NAME.match(path.name)
        if not match:
            problems.append(f"{path.name}: stage modules are named sNN_name.py")
            continue
        if match.group(1) in numbers:
            problems.append(f"{path.name}: sequence number {match.group(1)} already used by {numbers[match.group(1)]}")
        numbers[match.group(1)] = path.name
        problems.extend(check_file(path))
    if not numbers:
        problems.append(f"{stages_dir}: no stage modules")
    files = [name[1:-3] for _, name in sorted(numbers.items())]
    listed = listed_stages(stages_dir)
    if listed != files:
        problems.append(f"pipeline.stages.STAGES is {listed}, the stage modules in order are {files}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stages_dir = pathlib.Path(args[0]) if args else STAGES_DIR
    problems = check(stages_dir)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"stages: {len(list(stages_dir.glob('s[0-9][0-9]_*.py')))} stage modules, named and listed in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
