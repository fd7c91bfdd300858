"""Analyzers against analytic references built into tests/synthetic.py."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import warnings

import numpy as np
import plotly.graph_objects as go
import pytest
from scipy import stats

from lminf_diag.analyze import (
    AnalysisResult,
    analyze_all,
    logit_explosion,
    perplexity_by_position,
    position_subspaces,
)
from lminf_diag.analyze.fit import fit_log
from lminf_diag.analyze.perplexity import moving_average
from lminf_diag.capture.comparison import Comparison
from lminf_diag.errors import InvalidArgumentError
from tests import synthetic
from tests.synthetic import make_comparison, make_trace

N, T, L, H = 512, 128, 2, 3


# ---------------------------------------------------------------- fits (factors 1 and 2: tests/test_factors.py)


def test_fit_ci_matches_linregress():
    rng = np.random.default_rng(1)
    n = np.arange(1, 300)
    y = 0.3 + 0.7 * np.log(n) + rng.normal(0, 0.2, n.size)
    ref = stats.linregress(np.log(n), y)
    f = fit_log(n, y)
    half = stats.t.ppf(0.975, n.size - 2) * ref.stderr
    assert f.slope == pytest.approx(ref.slope, rel=1e-10)
    assert f.r2 == pytest.approx(ref.rvalue**2, rel=1e-10)
    assert (f.ci_low, f.ci_high) == pytest.approx((ref.slope - half, ref.slope + half), rel=1e-10)


def test_logit_explosion_needs_profile_rows():
    t = make_trace(64, train_len=16)
    t = dataclasses.replace(
        t, profile_rows=np.zeros(0, np.int64), logit_profile=np.zeros((L, H, 0, 0), np.float32)
    )
    t = dataclasses.replace(t, profile_dist=np.zeros(0, np.int64))
    with pytest.raises(InvalidArgumentError):
        logit_explosion(t)
    assert "logits" not in analyze_all(t)


# ---------------------------------------------------------------- positions


def _pos(result, label="baseline"):
    return result.summary()[label]


def test_planted_position_is_probed():
    # one window: the grouped probe has no fold (NaN, inconclusive); the geometry is still measured
    r = position_subspaces(make_trace(N, L, H, T, hidden_planted=True))
    s = _pos(r)
    assert math.isnan(s["position probe R², in-range bulk"]) and r.verdicts()[0].verdict == "inconclusive"
    assert s["first-token distance"] > 5  # planted 30 units away, bulk spread ~1.8
    angles = r.per_label["baseline"].layers[0].principal_angles
    assert angles.size == 2 and ((0 <= angles) & (angles <= 90)).all()


def test_shuffled_positions_are_not_probed():
    rep = [Comparison({"baseline": make_trace(N, L, H, T, hidden_planted=False, seed=s)}) for s in range(4)]
    s = _pos(position_subspaces(rep))
    assert abs(s["position probe R², in-range bulk"]) < 0.2  # grouped folds over 4 windows
    assert s["first-token distance"] < 2  # first tokens are ordinary bulk points


def test_first_token_outliers_alone():
    on = position_subspaces(make_trace(N, hidden_planted=False, first_token_outliers=True))
    assert _pos(on)["first-token distance"] > 5


def test_position_layers_and_errors():
    t = make_trace(N, L, H, T)
    r = position_subspaces(t, layers=[1], n_components=3)
    assert [ly.hidden_layer for ly in r.per_label["baseline"].layers] == [1]
    assert r.per_label["baseline"].layers[0].explained_variance.shape == (3,)
    with pytest.raises(InvalidArgumentError):
        position_subspaces(t, layers=[7])
    short = _pos(position_subspaces(make_trace(64, train_len=128)))
    assert math.isnan(short["principal angle excess over in-range halves"])  # nothing beyond T
    assert math.isnan(short["off-manifold ratio past T"])
    empty = dataclasses.replace(
        t,
        hidden=np.zeros((0, 0, 8), np.float16),
        hidden_layers=np.zeros(0, np.int64),
        hidden_positions=np.zeros(0, np.int64),
    )
    with pytest.raises(InvalidArgumentError):
        position_subspaces(empty)
    assert "positions" not in analyze_all(empty)


# ---------------------------------------------------------------- perplexity


def test_perplexity_analytic_means():
    r = perplexity_by_position(make_comparison(N, L, H, T))
    s = r.summary()
    beyond = np.mean([synthetic.NLL_BASE + synthetic.NLL_GROWTH * math.log((p + 1) / T) for p in range(T, N)])
    assert s["baseline"]["nll_within"] == pytest.approx(synthetic.NLL_BASE, abs=1e-6)
    assert s["baseline"]["nll_beyond"] == pytest.approx(beyond, abs=1e-6)
    assert s["baseline"]["ppl_beyond"] == pytest.approx(math.exp(beyond), rel=1e-6)
    assert s["lambda"]["nll_beyond"] == pytest.approx(synthetic.NLL_BASE, abs=1e-6)
    frame = r.to_frame()
    assert r.span == 64 and len(frame) == 2 * N // 64
    assert frame.iloc[0]["n_tokens"] == 63  # nll[0] is NaN


def test_moving_average_matches_naive_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    x[[0, 5, 50]] = np.nan
    for w in (1, 4, 7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows -> NaN
            naive = [np.nanmean(x[max(0, i - (w - 1) // 2) : i + w // 2 + 1]) for i in range(x.size)]
        np.testing.assert_allclose(moving_average(x, w), naive)


# ---------------------------------------------------------------- shared protocol and figures


def _array_lengths(obj):
    """Lengths of every array in a figure's JSON (lists and plotly's base64 typed arrays)."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            yield len(base64.b64decode(obj["bdata"])) // np.dtype(obj["dtype"]).itemsize
            return
        for v in obj.values():
            yield from _array_lengths(v)
    elif isinstance(obj, list):
        yield len(obj)
        for v in obj:
            yield from _array_lengths(v)


def _has_train_len_line(fig: go.Figure, train_len: int) -> bool:
    lines = [
        s
        for s in fig.layout.shapes
        if s.type == "line" and s.x0 == s.x1 == train_len and s.line.dash == "dash"
    ]
    notes = [a for a in fig.layout.annotations if a.text == "training length"]
    return bool(lines) and bool(notes)


@pytest.fixture(scope="module")
def long_results():
    windows = [make_comparison(n=20_000, layers=2, heads=2, train_len=4096, hidden_dim=8, seed=s) for s in range(3)]
    return analyze_all(windows)


def test_results_share_the_protocol(long_results):
    assert list(long_results) == ["logits", "entropy", "positions", "perplexity"]
    for name, res in long_results.items():
        assert isinstance(res, AnalysisResult)
        assert res.title and res.description and res.labels == ["baseline", "lambda"]
        figures = res.key_figures()
        assert {e.label for e in figures} == {"baseline", "lambda"}, name
        assert all(e.n == 3 for e in figures if e.method == "t" and e.has_interval), name
        verdicts = res.verdicts()
        assert all(v.verdict in ("present", "absent", "inconclusive") for v in verdicts)
        assert len(res.findings()) >= len(verdicts) > 0, name
        summary = res.summary()
        assert all(type(v) is float for d in summary.values() for v in d.values())
        frame = res.to_frame()
        assert len(frame) > 0 and set(frame["label"]) == {"baseline", "lambda"}
        assert list(res.key_frame().columns)[:6] == ["figure", "label", "estimate", "ci_low", "ci_high", "n"]


def test_figures_are_light_and_mark_training_length(long_results):
    for name, res in long_results.items():
        figs = res.figures()
        assert figs and all(isinstance(f, go.Figure) for f in figs)
        assert any(_has_train_len_line(f, 4096) for f in figs), name  # a position or distance figure
        for fig in figs:
            lengths = list(_array_lengths(json.loads(fig.to_json())))
            assert max(lengths, default=0) <= 5000, name
            if fig.layout.xaxis.title.text and (
                "position" in fig.layout.xaxis.title.text or "distance" in fig.layout.xaxis.title.text
            ):
                assert _has_train_len_line(fig, 4096), (name, fig.layout.title.text)


def test_log_axis_annotation_uses_log10_coordinates(long_results):
    fig = next(f for f in long_results["entropy"].figures() if f.layout.xaxis.type == "log")
    note = next(a for a in fig.layout.annotations if a.text == "training length")
    assert note.x == pytest.approx(math.log10(4096))


def test_mixed_comparison_gives_nan_for_missing_data():
    lam = make_trace(300, L, H, 64, kind="flat", label="lambda")
    lam = dataclasses.replace(
        lam,
        hidden=np.zeros((0, 0, 8), np.float16),
        hidden_layers=np.zeros(0, np.int64),
        hidden_positions=np.zeros(0, np.int64),
        profile_rows=np.zeros(0, np.int64),
        profile_dist=np.zeros(0, np.int64),
        logit_profile=np.zeros((L, H, 0, 0), np.float32),
    )
    res = analyze_all([make_trace(300, L, H, 64), lam])
    assert list(res) == ["logits", "entropy", "positions", "perplexity"]
    for r in res.values():
        assert set(r.summary()) <= {"baseline", "lambda"}
        r.to_frame()
        for fig in r.figures():
            fig.to_json()
    # the masked run has no profile rows: it is read by the row-max logits it uses (no paired excess)
    assert not any("paired" in k for k in res["logits"].summary()["lambda"])
    assert math.isnan(res["positions"].summary()["lambda"]["first-token distance"])


def test_non_finite_hidden_states_are_skipped():
    t = make_trace(N, L, H, T)
    t.hidden[0, 10, 3] = np.inf  # float16 overflow in one stored state
    r = position_subspaces(t)
    prof = r.per_label["baseline"].layers[0].distance_profile
    assert prof.shape == (N,) and np.isnan(prof[10]) and np.isfinite(prof[11])
    assert r.summary()["baseline"]["first-token distance"] > 5
    for fig in r.figures():
        fig.to_json()
