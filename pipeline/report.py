"""The run report: report.html beside summary.json, one self-contained page (its charts' script
inlined: nothing is fetched when it is opened) that people look at in a browser.

It shows the summary's figures, the score distribution with the decision thresholds, decisions over
event time, dead letters by code and stage with a few masked examples of each, a streaming run's
throughput and latency over time, and the model card's facts. Every figure comes from summary.json
(each shown number carries its key in `data-key`, so a test compares them), the model card, the
run's dead-letter files and, in streaming, the summary's refreshes.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import os
from collections.abc import Iterable
from functools import cache
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pipeline.shared import metrics

REPORT = "report.html"
EXAMPLES_PER_CODE = 3
_CHART_CONFIG = {"displaylogo": False, "responsive": True}
_COLORS = {"approve": "#3a923a", "review": "#e5a50a", "decline": "#c01c28"}


@cache
def _plotly_js() -> str:
    return get_plotlyjs()


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return html.escape(str(value))


def _row(label: str, key: str, value: Any) -> str:
    return f'<tr><th>{html.escape(label)}</th><td data-key="{html.escape(key)}">{_number(value)}</td></tr>'


def _chart(fig: go.Figure, name: str) -> str:
    fig.update_layout(margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=320, template="plotly_white")
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}", config=_CHART_CONFIG)
    return f'<div class="chart" data-chart="{name}">{inner}</div>'


class DeadLetterExamples:
    """A few dead letters of each code from a run's dead_letters/ files (their payload as the
    dead-letter output holds it: card numbers masked). A file is read once (window files do not
    change once in place), and no further than the codes still short of examples need."""

    def __init__(self, folder: str, per_code: int = EXAMPLES_PER_CODE):
        self._folder = folder
        self._per_code = per_code
        self._read: set[str] = set()
        self.found: dict[str, list[dict]] = {}

    def update(self, codes: Iterable[str]) -> dict[str, list[dict]]:
        for code in codes:
            self.found.setdefault(code, [])
        if "://" in self._folder or not os.path.isdir(self._folder):
            return self.found
        for name in sorted(os.listdir(self._folder)):
            if name.startswith(".") or name in self._read:
                continue
            if all(len(found) >= self._per_code for found in self.found.values()):
                break
            self._read.add(name)
            with open(os.path.join(self._folder, name), "rb") as f:
                for line in f:
                    self._take(json.loads(line))
        return self.found

    def _take(self, letter: dict) -> None:
        found = self.found.setdefault(str(letter.get("error_code", "")), [])
        if len(found) >= self._per_code:
            return
        where = letter.get("source", {})
        found.append(
            {
                "stage": letter.get("stage", ""),
                "message": letter.get("message", ""),
                "payload": letter.get("payload_text", "")[:300],
                "source": where.get("uri") or where.get("topic", ""),
                "position": where.get("line") or where.get("offset", 0),
            }
        )


def history_point(summary: dict[str, Any], seconds: float, history: list[dict[str, Any]]) -> dict[str, Any]:
    """A streaming refresh's point: records read and scored so far, and the read-to-decision p50
    and p99 of the decisions since the point before (from the latency buckets)."""
    buckets = list((summary.get("latency", {}).get("read_to_decision") or {}).get("buckets", {}).values())
    before = history[-1]["buckets"] if history else [0] * len(buckets)
    recent = [b - a for a, b in zip(before, buckets, strict=False)] if before and buckets else buckets
    return {
        "seconds": round(seconds, 1),
        "read": summary.get("read", 0),
        "scored": summary.get("scored", 0),
        "p50": metrics.latency_quantile(recent, 0.5) if recent else None,
        "p99": metrics.latency_quantile(recent, 0.99) if recent else None,
        "buckets": buckets,
    }


def render(
    summary: dict[str, Any],
    card: dict[str, Any] | None,
    thresholds: tuple[str, float, float],
    examples: dict[str, list[dict]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> str:
    """The page, as text. `thresholds` is (version, review, decline); `history` the streaming run's
    points: seconds since start, records read and scored, read-to-decision p50/p99 since the point
    before."""
    version, review, decline = thresholds
    running = bool(summary.get("running"))
    state = "running" if running else f"finished, exit code {summary.get('exit_code', '?')}"
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f'<h1>riskpipe run report</h1><p class="meta">{html.escape(summary.get("mode", ""))} run on '
        f"{html.escape(summary.get('runner', ''))}, {html.escape(state)}; model "
        f"<b>{html.escape(summary.get('model_version', ''))}</b> (feature set "
        f"{html.escape(summary.get('feature_set', ''))}); written {generated}"
        + (", refreshed as the run goes" if running else "")
        + "</p>",
        _summary_table(summary),
        "<h2>Scores and decisions</h2>",
        _score_chart(summary, review, decline, version),
        _decisions_chart(summary),
        "<h2>Dead letters</h2>",
        _dead_letters(summary, examples or {}),
    ]
    if summary.get("mode") == "streaming":
        parts += ["<h2>Throughput and latency</h2>", _streaming_charts(summary, history or [])]
    parts += ["<h2>Model</h2>", _model(card, summary)]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>riskpipe report: {html.escape(summary.get('output_dir', ''))}</title>"
        f"<style>{_CSS}</style><script>{_plotly_js()}</script></head>"
        f"<body>{body}</body></html>\n"
    )


def _summary_table(summary: dict[str, Any]) -> str:
    rows = [
        _row("records read", "read", summary.get("read", 0)),
        _row("scored", "scored", summary.get("scored", 0)),
        _row("dead letters", "dead_letters", summary.get("dead_letters", 0)),
        _row("duplicates dropped", "duplicates", summary.get("duplicates", 0)),
        _row("late records", "late_records", summary.get("late_records", 0)),
        _row("source errors", "source_errors", summary.get("source_errors", 0)),
        _row("balanced", "balanced", summary.get("balanced", False)),
    ]
    decisions = summary.get("decisions", {})
    rows += [_row(f"decision: {d}", f"decisions/{d}", decisions.get(d, 0)) for d in ("approve", "review", "decline")]
    rows.append(_row("alerts written to a topic", "alerts", summary.get("alerts", 0)))
    drift = summary.get("drift") or {}
    if drift.get("score_psi") is not None:
        rows.append(_row("score drift (PSI)", "drift/score_psi", drift["score_psi"]))
        flagged = ", ".join(drift.get("flagged", [])) or "none"
        rows.append(f"<tr><th>drifted above {drift.get('threshold')}</th><td>{html.escape(flagged)}</td></tr>")
    shadow = summary.get("shadow")
    if shadow:
        rows.append(_row("shadow agreement", "shadow/agreement", shadow.get("agreement", 0.0)))
    return '<table class="figures">' + "".join(rows) + "</table>"


def _score_chart(summary: dict[str, Any], review: float, decline: float, version: str) -> str:
    counts = summary.get("score_histogram") or [0] * metrics.SCORE_BINS
    width = 1.0 / len(counts)
    fig = go.Figure(
        go.Bar(x=[(i + 0.5) * width for i in range(len(counts))], y=counts, width=width * 0.95, name="records")
    )
    for value, label in ((review, "review"), (decline, "decline")):
        fig.add_vline(x=value, line_dash="dash", line_color=_COLORS[label], annotation_text=f"{label} ≥ {value}")
    fig.update_layout(title=f"Score distribution (thresholds {version})", xaxis_title="score", yaxis_title="records")
    fig.update_yaxes(type="log" if max(counts, default=0) > 50 * max(1, sorted(counts)[len(counts) // 2]) else "linear")
    return _chart(fig, "scores")


def _decisions_chart(summary: dict[str, Any]) -> str:
    by_hour = summary.get("decisions_by_hour") or {}
    if not by_hour and summary.get("mode") == "streaming":
        # 50_predict counts decisions by event hour in batch only: counters named by the hour would
        # grow with a streaming job's age, and every one is reported again in each progress response.
        return (
            "<p>Decisions by hour of event time are counted in batch runs; a streaming run's decisions "
            "over time are its throughput below, and the metrics endpoint's <code>riskpipe_decisions</code> "
            "counters, scraped.</p>"
        )
    hours = list(by_hour)
    fig = go.Figure()
    for decision in ("approve", "review", "decline"):
        fig.add_trace(
            go.Bar(
                x=hours, y=[by_hour[h].get(decision, 0) for h in hours], name=decision, marker_color=_COLORS[decision]
            )
        )
    fig.update_layout(barmode="stack", title="Decisions by hour of event time (UTC)", yaxis_title="records")
    return _chart(fig, "decisions")


def _dead_letters(summary: dict[str, Any], examples: dict[str, list[dict]]) -> str:
    by_stage = summary.get("dead_letters_by_stage") or {}
    if not by_stage:
        return "<p>No dead letters.</p>"
    codes = sorted({code for codes in by_stage.values() for code in codes})
    fig = go.Figure()
    for stage, found in sorted(by_stage.items()):
        fig.add_trace(
            go.Bar(
                y=[c.removeprefix("ERROR_CODE_") for c in codes],
                x=[found.get(c, 0) for c in codes],
                name=stage,
                orientation="h",
            )
        )
    fig.update_layout(barmode="stack", title="Dead letters by code and stage", xaxis_title="records")
    fig.update_layout(height=max(320, 40 + 28 * len(codes)))
    rows = []
    for stage, found in sorted(by_stage.items()):
        for code, n in sorted(found.items()):
            rows.append(
                f"<tr><td>{html.escape(stage)}</td><td>{html.escape(code)}</td>"
                f'<td data-key="dead_letters_by_stage/{html.escape(stage)}/{html.escape(code)}">{_number(n)}</td></tr>'
            )
    table = '<table class="letters"><tr><th>stage</th><th>code</th><th>records</th></tr>' + "".join(rows) + "</table>"
    shown = []
    for code in codes:
        for example in examples.get(code, []):
            shown.append(
                f"<tr><td>{html.escape(code.removeprefix('ERROR_CODE_'))}</td><td>{html.escape(example['stage'])}</td>"
                f"<td>{html.escape(str(example['source']))}:{html.escape(str(example['position']))}</td>"
                f"<td>{html.escape(example['message'])}</td><td><code>{html.escape(example['payload'])}</code></td></tr>"
            )
    sample = (
        "<h3>Examples (payloads as the dead-letter output holds them: card numbers masked)</h3>"
        '<table class="examples"><tr><th>code</th><th>stage</th><th>from</th><th>message</th><th>payload</th></tr>'
        + "".join(shown)
        + "</table>"
        if shown
        else "<p>No examples: the dead letters went to a topic or a table.</p>"
    )
    return _chart(fig, "dead_letters") + table + sample


def _streaming_charts(summary: dict[str, Any], history: list[dict[str, Any]]) -> str:
    if len(history) < 2:
        return "<p>Throughput and latency appear after the second summary refresh.</p>"
    t = [point["seconds"] for point in history]
    rates = [0.0] + [
        (b["scored"] - a["scored"]) / max(b["seconds"] - a["seconds"], 1e-9) for a, b in itertools.pairwise(history)
    ]
    rate = go.Figure(go.Scatter(x=t, y=rates, mode="lines+markers", name="scored/s"))
    rate.update_layout(title="Records scored per second", xaxis_title="seconds since start", yaxis_title="records/s")
    latency = go.Figure()
    for key, name in (("p50", "p50"), ("p99", "p99")):
        latency.add_trace(go.Scatter(x=t, y=[point.get(key) for point in history], mode="lines+markers", name=name))
    latency.update_layout(
        title="Read to decision latency (since the previous refresh)",
        xaxis_title="seconds since start",
        yaxis_title="seconds",
    )
    return _chart(rate, "throughput") + _chart(latency, "latency")


def _model(card: dict[str, Any] | None, summary: dict[str, Any]) -> str:
    if card is None:
        return f"<p>{html.escape(summary.get('model_version', ''))}: no model card.</p>"
    data = card.get("training_data", {})
    held = card.get("held_out", {})
    rows = [
        ("version", card.get("model_version", "")),
        ("type", card.get("model_type", "")),
        ("feature set", f"{card.get('feature_set_version', '')} ({len(card.get('features', []))} features)"),
        ("trained on", f"{data.get('records_used', 0):,} records, fraud rate {data.get('fraud_rate', 0):.2%}"),
        ("held out", f"{data.get('held_out', '')} ({data.get('held_out_records', 0):,} records)"),
        ("held-out ROC-AUC", held.get("roc_auc", "")),
        ("held-out PR-AUC", held.get("pr_auc", "")),
        ("recall at 1% FPR", held.get("recall_at_1pct_fpr", "")),
    ]
    return (
        '<table class="figures">'
        + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        + "</table>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}"
    "h1{margin-bottom:.2em}.meta{color:#555}table{border-collapse:collapse;margin:.6em 0}"
    "th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}"
    "table.figures td{text-align:right;font-variant-numeric:tabular-nums}"
    "code{white-space:pre-wrap;word-break:break-all;font-size:.85em}.chart{margin:.8em 0}"
    "table.examples{width:100%;table-layout:fixed;font-size:.9em}table.examples td{word-break:break-word}"
    "table.examples th:nth-child(1){width:14%}table.examples th:nth-child(2){width:9%}"
    "table.examples th:nth-child(3){width:17%}table.examples th:nth-child(4){width:25%}"
)
