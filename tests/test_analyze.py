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
    entropy_growth,
    logit_explosion,
    perplexity_by_position,
    position_subspaces,
)
from lminf_diag.analyze.fit import fit_log
from lminf_diag.analyze.perplexity import moving_average
from lminf_diag.errors import InvalidArgumentError
from tests import synthetic
from tests.synthetic import make_comparison, make_trace

N, T, L, H = 512, 128, 2, 3


# ---------------------------------------------------------------- entropy


def test_uniform_entropy_slope_is_one_within():
    s = entropy_growth(make_trace(N, L, H, T)).summary()["baseline"]
    assert s["slope_within"] == pytest.approx(1.0, abs=1e-6)
    assert s["r2_within"] == pytest.approx(1.0, abs=1e-9)
    assert s["slope_beyond"] == pytest.approx(1.0, abs=1e-6)
    assert s["slope_within_ci_low"] <= 1.0 + 1e-6 and s["slope_within_ci_high"] >= 1.0 - 1e-6
    # mean of ln n over n = T+1..N
    assert s["mean_entropy_beyond"] == pytest.approx(np.mean(np.log(np.arange(T + 1, N + 1))), abs=1e-6)


def test_flat_entropy_slope_beyond_is_zero():
    r = entropy_growth(make_comparison(N, L, H, T))
    s = r.summary()["lambda"]
    assert s["slope_beyond"] == pytest.approx(0.0, abs=1e-9)
    assert s["mean_entropy_beyond"] == pytest.approx(math.log(T), abs=1e-6)
    np.testing.assert_allclose(r.per_label["lambda"].head_slopes, 0.0, atol=1e-9)
    np.testing.assert_allclose(r.per_label["baseline"].layer_slopes, 1.0, atol=1e-6)


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


def test_too_few_points_give_nan_not_errors():
    t = make_trace(n=T + 1, layers=L, heads=H, train_len=T)  # one position beyond
    s = entropy_growth(t).summary()["baseline"]
    assert math.isnan(s["slope_beyond"]) and math.isnan(s["r2_beyond"])
    s = entropy_growth(make_trace(n=64, train_len=16), train_len=1).summary()["baseline"]  # one point within
    assert math.isnan(s["slope_within"]) and s["slope_beyond"] == pytest.approx(1.0, abs=1e-6)
    r = entropy_growth(make_trace(n=64, train_len=128))  # nothing beyond: per-head slopes use "within"
    assert r.per_label["baseline"].slope_range == "within"
    assert math.isnan(r.summary()["baseline"]["mean_entropy_beyond"])


# ---------------------------------------------------------------- logits


def test_logit_excess_matches_planted_growth():
    s = logit_explosion(make_comparison(N, L, H, T))
    base, lam = s.summary()["baseline"], s.summary()["lambda"]
    g = synthetic.planted_growth(L, H)
    within = synthetic.logit_base(L, H).mean()
    # deepest profile distance is N - 1 (row N - 1 only); the envelope grows g * log2(d / T) past T
    assert base["max_logit_within"] == pytest.approx(within, abs=1e-6)
    assert base["excess"] == pytest.approx(g.mean() * math.log2((N - 1) / T), abs=1e-5)
    assert base["envelope_ratio"] == pytest.approx(1 + g.mean() * math.log2((N - 1) / T) / within, abs=1e-5)
    assert lam["excess"] == pytest.approx(0.0, abs=1e-6)
    top = s.per_label["baseline"].top_heads
    assert len(top) == 5 and (top[0].layer, top[0].head) == (L - 1, H - 1)
    assert top[0].excess == pytest.approx(g[-1, -1] * math.log2((N - 1) / T), abs=1e-5)


def test_logit_ratio_undefined_for_negative_logits():
    t = make_trace(N, L, H, T)
    t = dataclasses.replace(t, logit_profile=t.logit_profile - 10.0)
    s = logit_explosion(t).summary()["baseline"]
    assert math.isnan(s["envelope_ratio"])
    assert s["excess"] == pytest.approx(
        synthetic.planted_growth(L, H).mean() * math.log2((N - 1) / T), abs=1e-5
    )


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


def test_planted_position_is_probed():
    s = position_subspaces(make_trace(N, L, H, T, hidden_planted=True)).summary()["baseline"]
    assert s["probe_r2"] > 0.95
    assert s["first_token_distance"] > 5  # planted 30 units away, bulk spread ~3.3
    assert 0 <= s["principal_angle_mean"] <= 90


def test_shuffled_positions_are_not_probed():
    s = position_subspaces(make_trace(N, L, H, T, hidden_planted=False)).summary()["baseline"]
    assert s["probe_r2"] < 0.2
    assert s["first_token_distance"] < 2  # first tokens are ordinary bulk points


def test_first_token_outliers_alone():
    on = position_subspaces(make_trace(N, hidden_planted=False, first_token_outliers=True)).summary()
    assert on["baseline"]["first_token_distance"] > 5


def test_position_layers_and_errors():
    t = make_trace(N, L, H, T)
    r = position_subspaces(t, layers=[1], n_components=3)
    assert [ly.hidden_layer for ly in r.per_label["baseline"].layers] == [1]
    assert r.per_label["baseline"].layers[0].explained_variance.shape == (3,)
    with pytest.raises(InvalidArgumentError):
        position_subspaces(t, layers=[7])
    short = position_subspaces(make_trace(64, train_len=128)).summary()["baseline"]
    assert math.isnan(short["principal_angle_mean"])  # no positions beyond the training length
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
    cmp = make_comparison(n=20_000, layers=2, heads=2, train_len=4096, hidden_dim=8)
    return analyze_all(cmp)


def test_results_share_the_protocol(long_results):
    assert list(long_results) == ["logits", "entropy", "positions", "perplexity"]
    for res in long_results.values():
        assert isinstance(res, AnalysisResult)
        assert res.title and res.description and res.labels == ["baseline", "lambda"]
        summary = res.summary()
        assert list(summary) == ["baseline", "lambda"]
        assert all(type(v) is float for d in summary.values() for v in d.values())
        frame = res.to_frame()
        assert len(frame) > 0 and set(frame["label"]) == {"baseline", "lambda"}


def test_figures_are_light_and_mark_training_length(long_results):
    for name, res in long_results.items():
        figs = res.figures()
        assert figs and all(isinstance(f, go.Figure) for f in figs)
        assert _has_train_len_line(figs[0], 4096), name  # main figure: position or distance on x
        for fig in figs:
            lengths = list(_array_lengths(json.loads(fig.to_json())))
            assert max(lengths, default=0) <= 5000, name
            if fig.layout.xaxis.title.text and (
                "position" in fig.layout.xaxis.title.text or "distance" in fig.layout.xaxis.title.text
            ):
                assert _has_train_len_line(fig, 4096), (name, fig.layout.title.text)


def test_log_axis_annotation_uses_log10_coordinates(long_results):
    fig = long_results["entropy"].figures()[0]
    assert fig.layout.xaxis.type == "log"
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
        s = r.summary()
        assert set(s["baseline"]) == set(s["lambda"])
        r.to_frame()
        for fig in r.figures():
            fig.to_json()
    assert math.isnan(res["logits"].summary()["lambda"]["excess"])
    assert math.isnan(res["positions"].summary()["lambda"]["probe_r2_layer1"])


def test_non_finite_hidden_states_are_skipped():
    t = make_trace(N, L, H, T)
    t.hidden[0, 10, 3] = np.inf  # float16 overflow in one stored state
    r = position_subspaces(t)
    prof = r.per_label["baseline"].layers[0].distance_profile
    assert prof.shape == (N,) and np.isnan(prof[10]) and np.isfinite(prof[11])
    assert r.summary()["baseline"]["probe_r2"] > 0.95
    for fig in r.figures():
        fig.to_json()
