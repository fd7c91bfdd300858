"""The HTML report: structure, self-containment, escaping of every input string, size."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from lminf_diag.analyze import analyze_all, entropy_growth
from lminf_diag.capture.comparison import Comparison
from lminf_diag.report import build_report, findings, key_table, render_report
from lminf_diag.report.builder import plotly_js
from lminf_diag.report.escape import escape_script_json, script_json, text
from tests.synthetic import make_comparison, make_trace

SCRIPT_PAYLOAD = "<script>alert(1)</script>"
ATTR_PAYLOAD = '"><img src=x onerror=alert(1)>'
BREAKOUT = "</script><script>alert(1)</script>"


def strip_bundle(page: str) -> str:
    """The page without the inlined plotly.js (which holds URLs in its own comments and strings)."""
    return page.replace(plotly_js(), "")


@pytest.fixture(scope="module")
def results():
    return analyze_all([make_comparison(n=512, train_len=128, seed=s, window_noise=0.1) for s in range(3)])


@pytest.fixture(scope="module")
def page(results, tmp_path_factory):
    meta = {"model": "synthetic", "text": "book:carroll-alice", "length": 512, "versions": {"torch": "2.13"}}
    return build_report(results, meta, tmp_path_factory.mktemp("rep") / "report.html").read_text()


def test_every_section_findings_and_metadata(results, page):
    for result in results.values():
        assert f"<h2>{html.escape(result.title)}</h2>" in page
        assert html.escape(result.description) in page
    assert (
        page.index('id="findings"')
        < page.index('id="verdicts"')
        < page.index('id="key-figures"')
        < page.index('id="sec-')
        < page.index('id="metadata"')
    )
    for line in findings(results):  # every sentence the results generate is on the page
        assert html.escape(line) in page
    assert "<td>logit_explosion</td><td>baseline</td>" in page  # the verdict table
    assert "<td>versions / torch</td><td>2.13</td>" in page
    assert "training length 128 tokens" in page  # header line
    n_figures = sum(len(r.figures()) for r in results.values())
    assert page.count('class="lminf-figure"') == n_figures
    assert f'data-figures="{n_figures}"' in page


def test_training_length_is_marked_in_the_figures(page):
    blobs = re.findall(r'<script type="application/json" class="lminf-figure"[^>]*>(.*?)</script>', page)
    layouts = [json.loads(b)["layout"] for b in blobs]
    marked = [
        lay for lay in layouts if any(a.get("text") == "training length" for a in lay.get("annotations", []))
    ]
    assert len(marked) >= 3


def test_self_contained(page):
    bundle = plotly_js()
    assert page.count(bundle) == 1
    rest = strip_bundle(page)
    assert not re.search(r"<script[^>]*\ssrc\s*=", rest, re.I)
    assert not re.search(r"<link\b", rest, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", rest, re.I)
    assert "http://" not in rest and "https://" not in rest
    assert "Content-Security-Policy" in rest and "default-src 'none'" in rest


def payload_results():
    """Traces whose label, model name and text source are XSS payloads."""
    base = make_trace(n=256, train_len=64)
    evil = make_trace(n=256, train_len=64, label=SCRIPT_PAYLOAD + ATTR_PAYLOAD, kind="flat")
    for t in (base, evil):
        t.meta.model = SCRIPT_PAYLOAD
        t.meta.text_source = ATTR_PAYLOAD
    return analyze_all(Comparison({"baseline": base, evil.label: evil}))


def test_payloads_appear_only_escaped(tmp_path):
    meta = {
        "model": SCRIPT_PAYLOAD,
        "text": ATTR_PAYLOAD,
        "length": BREAKOUT,
        "settings": {ATTR_PAYLOAD: BREAKOUT},
    }
    page = strip_bundle(build_report(payload_results(), meta, tmp_path / "r.html").read_text())
    for payload in (SCRIPT_PAYLOAD, ATTR_PAYLOAD, BREAKOUT, "<img src=x"):
        assert payload not in page
    assert html.escape(SCRIPT_PAYLOAD) in page  # header, table rows
    assert html.escape(ATTR_PAYLOAD) in page
    assert "\\u003cscript\\u003ealert(1)" in page  # the label inside the figure JSON
    # the only <script> elements are the page's own: recorder, bundle, figure data, loader
    opened = re.findall(r"<script\b[^>]*>", page)
    assert all(s == "<script>" or 'class="lminf-figure"' in s for s in opened)
    assert page.count("<script") == page.count("</script>")


def test_escape_helpers_round_trip():
    obj = {"label": BREAKOUT + "\u2028&", "x": [1.5, float("nan")]}
    encoded = script_json(obj)
    assert "<" not in encoded and ">" not in encoded and "&" not in encoded and "\u2028" not in encoded
    assert json.loads(encoded) == {"label": BREAKOUT + "\u2028&", "x": [1.5, None]}
    assert json.loads(escape_script_json(json.dumps({"a": BREAKOUT}))) == {"a": BREAKOUT}
    assert text(ATTR_PAYLOAD) == "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"


class SpeedResult:
    """A result from another analyzer: title, description, key_figures, findings and figures."""

    title = "Decoding speed <fast>"
    description = "Tokens per second while generating."
    train_len = None

    def key_figures(self):
        from lminf_diag.analyze.estimate import estimate

        return [estimate([12.0, 13.0], figure="tokens per second", label="baseline"),
                estimate([29.0, 31.0], figure="tokens per second", label="lambda")]

    def findings(self):
        return ["Generated from <intervals>."]

    def figures(self):
        return [go.Figure(go.Bar(x=["baseline", "lambda"], y=[12.5, 30.0]))]


def test_any_result_with_the_protocol(tmp_path):
    mixed = [entropy_growth(make_comparison(n=256, train_len=64)), SpeedResult()]
    page = build_report(mixed, {}, tmp_path / "r.html").read_text()
    assert "<h2>Decoding speed &lt;fast&gt;</h2>" in page and "Generated from &lt;intervals&gt;." in page
    table = key_table({"speed": SpeedResult()})
    assert [(e.figure, e.label, e.estimate) for e in table.rows] == [
        ("tokens per second", "baseline", 12.5), ("tokens per second", "lambda", 30.0)]
    assert table.to_records()[0]["section"] == "speed" and table.to_records()[0]["n"] == 2
    single = render_report(SpeedResult(), None)
    assert single.count('class="lminf-figure"') == 1

    class Bare:  # no key_figures, no findings: the report shows its figures and nothing is guessed
        title, description, train_len = "Bare", "", None

        def figures(self):
            return []

    assert key_table({"bare": Bare()}).rows == [] and findings({"bare": Bare()}) == []


def test_findings_without_positions_beyond_training_length():
    results = {"entropy": entropy_growth([make_comparison(n=64, train_len=128, seed=s) for s in range(3)])}
    lines = findings(results)
    assert all("inconclusive" in line for line in lines)
    lines = findings(results, {"length": 64, "train_len": 128})
    assert lines[0].startswith("The window (64 tokens) does not go past the training length (128 tokens)")
    assert "--length" in lines[0]


def test_16k_report_is_small(tmp_path):
    windows = [make_comparison(n=16384, train_len=4096, hidden_dim=16, seed=s) for s in range(4)]
    for cmp in windows:
        for t in cmp.traces.values():  # hidden states at every 64th position, as the CLI's auto stride keeps
            keep = np.arange(0, 16384, 64)
            t.hidden_positions, t.hidden = keep, t.hidden[:, keep]
    page = build_report(analyze_all(windows), {"model": "synthetic"}, tmp_path / "r.html").read_text()
    assert len(strip_bundle(page).encode()) < 2_000_000
    assert len(page.encode()) < len(plotly_js().encode()) + 2_000_000
