"""Reprs and Jupyter tables of results, comparisons, replicates and traces; the figures' shared style.

Results are built from the analytic synthetic traces (tests/synthetic.py). The expected colours
are the palette's published table (docs: `analyze.palette`), written out here, not read from it.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import numpy as np
import plotly.graph_objects as go
import pytest

import lminf_diag as ld
from lminf_diag.analyze import analyze_all
from lminf_diag.analyze.figure_style import finish_figure
from lminf_diag.capture.comparison import Comparison
from lminf_diag.capture.windows import Replicate
from tests.synthetic import make_comparison, make_trace

EXPECTED = {"baseline": "#1f77b4", "lambda": "#ff7f0e", "mask_only": "#2ca02c", "cap_only": "#d62728",
            "window": "#9467bd"}
N, T, LAYERS = 256, 64, 6


def _window(seed: int, labels=("baseline", "lambda", "window", "cap_only")) -> Comparison:
    kinds = {"baseline": "uniform"}
    return Comparison({lab: make_trace(N, LAYERS, 2, T, label=lab, kind=kinds.get(lab, "flat"), seed=seed)
                       for lab in labels})


@pytest.fixture(scope="module")
def rep() -> Replicate:
    return Replicate([_window(s) for s in range(3)])


@pytest.fixture(scope="module")
def results(rep):
    return analyze_all(rep)


class _Checker(HTMLParser):
    """Counts tags and checks they nest (no stray closing tag, none left open)."""

    VOID = {"br", "hr", "img", "meta", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.cells: list[str] = []
        self._cell = False

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        self._cell = tag in ("td", "th")

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> does not close {self.stack[-1:]}"
        self.stack.pop()
        self._cell = False

    def handle_data(self, data):
        if self._cell:
            self.cells.append(data)


def _parse(text: str) -> _Checker:
    p = _Checker()
    p.feed(text)
    p.close()
    assert not p.stack, f"unclosed tags {p.stack}"
    return p


# ---------------------------------------------------------------------------------------- reprs


def test_result_reprs_are_short_and_name_labels(results):
    for name, r in results.items():
        text = repr(r)
        assert len(text) < 300, (name, len(text), text)
        assert "\n" not in text and "array(" not in text
        assert text.startswith(f"<{type(r).__name__}") and "baseline" in text and "lambda" in text
        assert "windows=3" in text and f"T={T}" in text


def test_result_html_holds_escaped_key_figures_and_verdicts(results):
    r = results["perplexity"]
    page = r._repr_html_()
    cells = _parse(page).cells
    for v in r.verdicts():
        assert v.verdict in cells and v.label in cells
    for e in r.key_figures():
        assert f"{e.estimate:.3g}" in cells or not np.isfinite(e.estimate)
        if e.has_interval:
            assert f"[{e.ci_low:.3g}, {e.ci_high:.3g}]" in cells
    hostile = make_comparison(n=N, train_len=T)
    evil = "<script>alert(1)</script>"
    hostile.traces[evil] = hostile.traces.pop("lambda")
    hostile.traces[evil].meta.label = evil
    out = ld.analyze.perplexity_by_position(hostile)._repr_html_()
    assert "<script>" not in out and html.escape(evil) in out
    _parse(out)


def test_comparison_replicate_trace_reprs(rep):
    cmp = rep[0]
    for obj in (cmp, rep, cmp["lambda"]):
        text = repr(obj)
        assert len(text) < 300 and "\n" not in text and "array(" not in text, text
        assert "lambda" in text
        _parse(obj._repr_html_())
    assert f"windows={len(rep)}" in repr(rep)
    assert "patch=lambda(" in repr(cmp["lambda"]) and f"n_tokens={N}" in repr(cmp["lambda"])
    # the mean loss the repr quotes is the plain mean of the finite per-token losses
    expected = float(np.mean(cmp["baseline"].nll[1:]))
    assert f"baseline {expected:.3g}" in repr(cmp)


def test_comparison_reads_like_a_dict(rep):
    cmp = rep[0]
    assert cmp["lambda"] is cmp.traces["lambda"]
    assert "lambda" in cmp and "yarn" not in cmp
    assert list(cmp) == ["baseline", "lambda", "window", "cap_only"] and len(cmp) == 4
    assert dict(cmp.items()) == cmp.traces
    with pytest.raises(KeyError, match=r"yarn.*\['baseline', 'lambda', 'window', 'cap_only'\]"):
        cmp["yarn"]
    assert [w is rep[i] for i, w in enumerate(rep)] == [True] * len(rep)
    assert "window" in rep


# -------------------------------------------------------------------------------------- figures


def _trace_color(t) -> str | None:
    line = getattr(t, "line", None)
    if line is not None and line.color:
        return line.color
    marker = getattr(t, "marker", None)
    if marker is not None and isinstance(marker.color, str):
        return marker.color
    return None


def _figures(results):
    figs = [f for r in results.values() for f in r.figures()]
    assert figs and all(isinstance(f, go.Figure) for f in figs)
    return figs


def test_every_figure_uses_the_palette_colour_of_a_label(results):
    seen = set()
    for fig in _figures(results):
        for t in fig.data:
            name = (t.name or "").split(" (")[0]
            color = _trace_color(t)
            if name in EXPECTED and color is not None:
                assert color == EXPECTED[name], (fig.layout.title.text, name, color)
                seen.add(name)
            fill = getattr(t, "fillcolor", None)
            if fill and getattr(t, "fill", None) == "tonexty":
                alpha = float(re.search(r"rgba\(.*,\s*([\d.]+)\)", fill).group(1))
                assert alpha <= 0.2, "bands stay light"
    assert seen == set(EXPECTED) - {"mask_only"}


def test_label_colour_does_not_depend_on_the_other_labels():
    few = ld.analyze.perplexity_by_position(Replicate([_window(s, ("baseline", "window")) for s in range(2)]))
    many = ld.analyze.perplexity_by_position(Replicate([_window(s) for s in range(2)]))
    color = {}
    for r in (few, many):
        curve = r.figures()[1]
        color[len(r.labels)] = {t.name: t.line.color for t in curve.data if t.name == "window"}
    assert color[2] == color[4] == {"window": EXPECTED["window"]}


def test_layer_axes_show_integer_ticks(results):
    layer_axes = []
    for fig in _figures(results):
        for key, axis in fig.layout.to_plotly_json().items():
            title = ((axis.get("title") or {}).get("text") or "") if isinstance(axis, dict) else ""
            if key.startswith(("xaxis", "yaxis")) and "layer" in title.lower():
                layer_axes.append(axis)
    assert layer_axes, "the entropy result has a per-layer figure"
    for axis in layer_axes:
        assert axis["tickformat"] == "d" and float(axis["dtick"]).is_integer() and axis["dtick"] >= 1


def test_bands_under_lines_and_x_clipped_to_data(results):
    curve = results["perplexity"].figures()[1]
    kinds = ["band" if (t.fill == "tonexty" or (t.line.width == 0)) else "line" for t in curve.data]
    assert "band" in kinds and kinds == sorted(kinds)  # every band before every line
    lo, hi = curve.layout.xaxis.range
    xs = np.concatenate([np.asarray(t.x, dtype=float) for t in curve.data])
    assert lo == xs.min() and hi == xs.max()
    # a line that stops early (NaN tail) does not stretch the axis
    fig = finish_figure(go.Figure(go.Scatter(x=np.arange(10), y=[1.0] * 4 + [np.nan] * 6, name="lambda")))
    assert list(fig.layout.xaxis.range) == [0.0, 3.0]


def test_loss_smoothing_scales_with_the_training_length():
    for t_len in (32, 128):
        r = ld.analyze.perplexity_by_position(make_comparison(n=8 * t_len, train_len=t_len))
        assert r.smooth == t_len // 16
        # the smoothed curve is a centred moving average over T/16 tokens (independent numpy check)
        x = r.per_label["baseline"].nll
        w = t_len // 16
        i = 4 * t_len
        lo, hi = i - (w - 1) // 2, i + w // 2 + 1
        assert np.isclose(r.per_label["baseline"].smoothed[i], np.nanmean(x[lo:hi]))


def test_heat_maps_use_a_sequential_scale(results):
    for fig in _figures(results):
        for t in fig.data:
            if t.type == "heatmap" or (getattr(t, "marker", None) is not None and t.marker.colorscale):
                scale = t.colorscale if t.type == "heatmap" else t.marker.colorscale
                names = {c[1] for c in scale} if scale else set()
                assert not names & set(EXPECTED.values()), "a heat map reuses a label colour"
