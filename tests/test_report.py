"""The run report (report.html), opened in a real browser: Debian's Chromium, driven by Playwright,
from disk, with no network. No console error, every chart drawn, every number the summary's."""

import json
import shutil

import pytest

from pipeline import report, runner
from tests.conftest import ROOT, need
from tests.helpers import job_config

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    need(chromium is not None, "Chromium is not installed (scripts/apt_tool.sh chromium chromium installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_report(browser, path):
    """The page, once every chart is drawn; with the console's errors and the requests it made."""
    page = browser.new_page()
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_function(
        "[...document.querySelectorAll('[data-chart]')].every("
        "c => c.querySelector('.main-svg') && c.querySelector('.js-plotly-plot')._fullData)",
        timeout=30000,
    )
    return page, problems, requests


def shown(page) -> dict[str, str]:
    return dict(page.eval_on_selector_all("[data-key]", "els => els.map(e => [e.dataset.key, e.textContent])"))


def value_at(summary: dict, key: str):
    node = summary
    for part in key.split("/"):
        node = node[part]
    return node


def as_shown(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3f}"


def test_a_batch_runs_report_shows_its_summary_and_draws_every_chart(dataset, tmp_path, browser):
    out = tmp_path / "out"
    config = job_config(dataset, out, predict__shadow_model=str(ROOT / "models/fraud-gbm-v3/model.onnx"))
    summary = runner.run(["--config", config, "--runner=FnApiRunner"])
    path = out / report.REPORT
    assert path.exists() and summary["written_to"]["report"] == str(path)
    on_disk = json.loads((out / "summary.json").read_text())
    page, problems, requests = open_report(browser, path)
    assert problems == []
    assert all(url.startswith("file://") for url in requests), "nothing fetched: the page is self-contained"
    charts = page.eval_on_selector_all("[data-chart]", "els => els.map(e => e.dataset.chart)")
    assert charts == ["scores", "decisions", "dead_letters"]
    drawn = page.eval_on_selector_all(
        "[data-chart]", "els => els.map(e => e.querySelectorAll('.main-svg .trace').length)"
    )
    assert drawn == [1, 3, 1]  # every chart drew its traces (bars for the scores, each decision, each stage)
    numbers = shown(page)
    for key in ("read", "scored", "dead_letters", "duplicates", "balanced", "decisions/approve", "decisions/decline"):
        assert numbers[key] == as_shown(value_at(on_disk, key)), key
    letters = {k: v for k, v in numbers.items() if k.startswith("dead_letters_by_stage/")}
    assert letters and all(v == as_shown(value_at(on_disk, k)) for k, v in letters.items())
    assert numbers["shadow/agreement"] == as_shown(on_disk["shadow"]["agreement"])
    # the score chart's bars are the summary's histogram
    bars = page.evaluate("document.getElementById('chart-scores').data[0].y")
    assert list(bars) == on_disk["score_histogram"] and sum(bars) == on_disk["scored"]
    examples = page.eval_on_selector_all("table.examples tr", "rows => rows.length")
    assert examples > 1


def test_a_streaming_report_draws_throughput_and_latency(tmp_path, browser):
    points = []
    buckets = [0] * 15
    for i in range(4):
        buckets = [b + (5 if j == 4 else 0) for j, b in enumerate(buckets)]
        summary = {
            "mode": "streaming",
            "running": i < 3,
            "read": 100 * i,
            "scored": 95 * i,
            "latency": {"read_to_decision": {"buckets": dict(zip(map(str, range(15)), buckets, strict=True))}},
        }
        points.append(report.history_point(summary, 10.0 * i, points))
    page_text = report.render({**summary, "runner": "PrismRunner"}, None, ("t-1", 0.5, 0.9), {}, points)
    path = tmp_path / report.REPORT
    path.write_text(page_text)
    page, problems, _ = open_report(browser, path)
    assert problems == []
    charts = page.eval_on_selector_all("[data-chart]", "els => els.map(e => e.dataset.chart)")
    # decisions by event hour are batch only (50_predict): a streaming report says where to look
    assert charts == ["scores", "throughput", "latency"]
    assert "riskpipe_decisions" in page_text
    rates = page.evaluate("document.getElementById('chart-throughput').data[0].y")
    assert list(rates) == [0.0, 9.5, 9.5, 9.5]
    p50 = page.evaluate("document.getElementById('chart-latency').data[0].y")
    assert p50[1:] == [0.75, 0.75, 0.75]  # 5 decisions a refresh, all in (0.5, 1]
