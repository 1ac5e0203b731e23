"""A picture of the job's graph as built for a configuration: its stages, the contracts between
them, and every dead-letter path, in Graphviz's DOT language (`python -m pipeline.runner
--render_graph out.svg` draws it with Graphviz's `dot`).

The nodes are the graph's top-level transforms (the numbered stages; the flatten of every stage's
dead letters); an edge is a PCollection from the stage that makes it to the stage that reads it,
labelled with its contract (the element type). Dead-letter edges are dashed and red. The text is
deterministic, so a check can compare the default job's picture with the one in the docs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import apache_beam as beam

from pipeline.shared.errors import ConfigError

DEAD_LETTER_TYPE = "DeadLetter"


def shown(text: str) -> str:
    """`text` with the working folder's path left out (the picture of a config is the same from any clone)."""
    return text.replace(os.getcwd().rstrip("/") + "/", "")


def _top(applied: Any, root: Any) -> Any:
    while applied.parent is not None and applied.parent is not root:
        applied = applied.parent
    return applied


def _type_name(pcoll: Any) -> str:
    kind = getattr(pcoll, "element_type", None)
    return getattr(kind, "__name__", "") or str(kind or "")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_of(pipeline: beam.Pipeline, source: str, outputs: dict[str, str]) -> str:
    """The DOT text of `pipeline`'s top-level graph; `source` names where records come from,
    `outputs` where each output goes ({"scored": "output/local/scored/", ...})."""
    root = pipeline.transforms_stack[0]
    parts = list(root.parts)
    edges: list[tuple[str, str, str]] = []
    for part in parts:
        for pcoll in part.main_inputs.values():
            if pcoll.producer is None:
                continue
            producer = _top(pcoll.producer, root).full_label
            edges.append((producer, part.full_label, _type_name(pcoll)))
    lines = [
        "digraph riskpipe {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.35];',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
        f'  source [label={_quoted(source)}, shape=folder, fillcolor="#f4f4f4"];',
    ]
    for part in parts:
        label = part.full_label
        if label == "AllDeadLetters":
            lines.append(f'  {_quoted(label)} [label="dead letters", shape=circle, fillcolor="#fbe9e9", fontsize=9];')
        else:
            lines.append(f"  {_quoted(label)};")
    first = parts[0].full_label if parts else ""
    lines.append(f'  source -> {_quoted(first)} [label="bytes"];')
    for producer, consumer, kind in sorted(set(edges), key=lambda e: (e[0], e[1], e[2])):
        style = ", weight=10"  # the main flow in one row
        if kind == DEAD_LETTER_TYPE:
            style = ', style=dashed, color="#c01c28", fontcolor="#c01c28"'
            if consumer == "AllDeadLetters":
                # every stage's dead letters: below the flow, not in it; red and dashed say what they are
                lines.append(f"  {_quoted(producer)} -> {_quoted(consumer)} [{style[2:]}, constraint=false];")
                continue
        lines.append(f"  {_quoted(producer)} -> {_quoted(consumer)} [label={_quoted(kind)}{style}];")
    for name, where in outputs.items():
        node = f"out_{name.replace(' ', '_')}"
        lines.append(f'  {node} [label={_quoted(where)}, shape=folder, fillcolor="#f4f4f4"];')
        writer = "90_dead_letter" if name == "dead letters" else "60_sink"
        lines.append(f"  {_quoted(writer)} -> {node};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot: str, path: str) -> None:
    """Draws `dot` to `path` (SVG) with Graphviz's dot; ConfigError when Graphviz is missing."""
    program = shutil.which("dot")
    if program is None:
        raise ConfigError(
            "--render_graph: Graphviz's dot is not installed (scripts/apt_tool.sh dot graphviz installs it)"
        )
    done = subprocess.run([program, "-Tsvg", "-o", path], input=dot.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"--render_graph: dot failed: {done.stderr.decode(errors='replace')[:500]}")
