"""Factor 3 (implicit position) against synthetic truth built here by hand.

Hidden states of window `seed`: h(p) = 3 (ln(p+1) - mean) u + 0.3 noise, with ONE direction u
shared by every window (one "model", several texts), the noise drawn from the seed; unplanted
states use a permutation of the positions (no position information).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lminf_diag.analyze import position_subspaces
from lminf_diag.analyze import probe as probe_mod
from lminf_diag.analyze.positions import CONTRAST, DIST, OFF, PROBE, PROBE_NET
from lminf_diag.capture.comparison import Comparison
from lminf_diag.capture.windows import Replicate
from lminf_diag.errors import InvalidArgumentError
from tests.synthetic import make_trace

N, T, DIM = 256, 128, 16


def _basis(dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    q, _ = np.linalg.qr(np.random.default_rng(12345).normal(size=(dim, 2)))
    return q[:, 0], q[:, 1]


def _states(seed: int, planted: bool = True, n: int = N, layers: int = 2) -> np.ndarray:
    """(K, N, D) float64 states; the same u for every seed."""
    u, _ = _basis()
    rng = np.random.default_rng(seed)
    pos = np.arange(n) if planted else rng.permutation(n)
    t = np.log(pos + 1.0)
    return 3.0 * (t - t.mean())[None, :, None] * u + 0.3 * rng.normal(size=(layers, n, DIM))


def _trace(hidden: np.ndarray, label: str = "baseline", seed: int = 0):
    kind = "uniform" if label == "baseline" else "flat"
    t = make_trace(hidden.shape[1], 1, 1, T, label=label, kind=kind, seed=seed, hidden_dim=DIM)
    if label not in ("baseline", "lambda"):
        t.meta.patch = dict(t.meta.patch, mode=label)
    return dataclasses.replace(
        t, hidden=hidden.astype(np.float16), hidden_layers=np.arange(hidden.shape[0], dtype=np.int64)
    )


def _rep(planted: bool, windows: int = 4, edit=None) -> Replicate:
    cmps = []
    for s in range(windows):
        h = _states(s, planted)
        if edit is not None:
            h = edit(h)
        cmps.append(Comparison({"baseline": _trace(h, seed=s)}))
    return Replicate(cmps)


def _fig(r, lab="baseline"):
    return {e.figure: e for e in r.key_figures() if e.label == lab}


def test_unencoded_position_gives_r2_near_zero_under_grouped_folds():
    r = position_subspaces(_rep(planted=False))
    e = _fig(r)[PROBE]
    assert e.n == 4 and abs(e.estimate) < 0.15, e
    frame = r.to_frame()
    assert frame["probe_r2"].abs().max() < 0.35
    assert {v.label: v.verdict for v in r.verdicts()}["baseline"] != "present"


def test_planted_position_gives_high_r2_and_present():
    r = position_subspaces(_rep(planted=True))
    # best linear read-out of y = ln(p+1) from 3 y + N(0, 0.3^2): R² = var(y) / (var(y) + 0.1^2)
    y = np.log(np.arange(64, T) + 1.0)
    assert _fig(r)[PROBE].estimate == pytest.approx(y.var() / (y.var() + 0.01), abs=0.04)
    assert _fig(r)[PROBE_NET].ci_low > 0.6  # the shuffled null sits near 0
    assert [(v.factor, v.verdict) for v in r.verdicts()] == [("implicit_position", "present")]
    table = r.layer_table("baseline")
    assert (table["min"] <= table["median"]).all() and (table["median"] <= table["max"]).all()


def test_one_window_is_inconclusive_never_a_within_text_fold():
    r = position_subspaces(_rep(planted=True, windows=1))
    assert np.isnan(_fig(r)[PROBE].estimate)
    assert r.verdicts()[0].verdict == "inconclusive"
    assert any("inconclusive (needs >= 2 windows" in s for s in r.findings())


def test_grouped_probe_matches_sklearn_leave_one_group_out(monkeypatch):
    monkeypatch.setattr(probe_mod, "ALPHAS", np.array([0.01]))  # one penalty: no selection to compare
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(40, 6)) + np.arange(6) for _ in range(3)]
    ys = [x[:, 0] * 0.5 - x[:, 2] + rng.normal(size=40) * 0.1 for x in xs]
    got = probe_mod.grouped_probe(xs, ys)
    x, y = np.concatenate(xs), np.concatenate(ys)
    groups = np.repeat(np.arange(3), 40)
    want = []
    for tr, te in LeaveOneGroupOut().split(x, y, groups):
        m = make_pipeline(StandardScaler(), Ridge(alpha=0.01 * len(tr))).fit(x[tr], y[tr])
        pred, yt = m.predict(x[te]), y[te]
        want.append(1 - np.sum((yt - pred) ** 2) / np.sum((yt - yt.mean()) ** 2))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_massive_outliers_do_not_wreck_the_probe_or_the_pca_view():
    _, v = _basis()

    def outliers(h):
        h = h.copy()
        h[:, 0] += 3000.0 * v  # position 0: about 1000x the bulk's norm
        h[:, 100] += 3000.0 * v  # a massive activation inside the bulk too
        return h

    clean = position_subspaces(_rep(planted=True))
    dirty = position_subspaces(_rep(planted=True, edit=outliers))
    assert _fig(dirty)[PROBE].estimate > 0.7
    assert abs(_fig(dirty)[PROBE].estimate - _fig(clean)[PROBE].estimate) < 0.02
    ly_c, ly_d = clean.per_label["baseline"].layers[0], dirty.per_label["baseline"].layers[0]
    assert ly_d.n_massive == 2
    span_c = np.diff(ly_c.coord_range, axis=1).ravel()
    span_d = np.diff(ly_d.coord_range, axis=1).ravel()
    np.testing.assert_allclose(span_d, span_c, rtol=0.05)  # axes set by the bulk, not the outlier
    pc1 = clean.figures()[1]
    assert all(np.isfinite(tr.x).all() for tr in pc1.data)
    scatter = dirty.figures()[1].data[0]
    assert max(abs(np.asarray(scatter.x))) <= np.abs(ly_d.coord_range[0]).max() + 1e-9  # clipped


def test_first_token_distance_uses_one_fixed_reference():
    def window(seed):
        h = _states(seed, planted=False)
        other = h.copy()
        other[:, T:] += 50.0  # the patched run differs only past T
        return Comparison({"baseline": _trace(h, seed=seed), "lambda": _trace(other, "lambda", seed=seed)})

    rep = Replicate([window(s) for s in range(3)])
    r = position_subspaces(rep, first_tokens=4)
    base, lam = _fig(r)[DIST], _fig(r, "lambda")[DIST]
    assert base.values == lam.values  # identical first tokens, identical distance
    # naive reference: window 0, layer 0, baseline positions [64, T)
    x = rep[0].traces["baseline"].hidden[0].astype(np.float64)
    bulk = x[64:T]
    c = bulk.mean(0)
    rms = np.sqrt(np.mean(np.sum((bulk - c) ** 2, axis=1)))
    want = np.mean(np.linalg.norm(x[:4] - c, axis=1)) / rms
    assert r.per_label["lambda"].windows[0][0].first_token_distance == pytest.approx(want, rel=1e-9)


def test_off_manifold_ratio_one_in_distribution_above_one_when_shifted():
    rng = np.random.default_rng(7)
    shift = rng.normal(size=DIM)
    shift *= 2.0 / np.linalg.norm(shift)  # about the size of the noise cloud (0.3 * sqrt(16) = 1.2)

    def window(seed):
        h = _states(seed, planted=False)  # i.i.d. states: past T is in distribution
        lam = h.copy()
        lam[:, T:] = _states(100 + seed, planted=False)[:, T:]  # fresh draws, same distribution
        win = lam.copy()
        win[:, T:] += shift  # off the manifold
        return Comparison(
            {
                "baseline": _trace(h, seed=seed),
                "lambda": _trace(lam, "lambda", seed=seed),
                "window": _trace(win, "window", seed=seed),
            }
        )

    r = position_subspaces(Replicate([window(s) for s in range(4)]))
    lam, win = _fig(r, "lambda")[OFF], _fig(r, "window")[OFF]
    assert 0.85 < lam.estimate < 1.15 and lam.ci_low < 1.1
    assert win.ci_low > 1.2
    assert _fig(r, "window")[CONTRAST].ci_low > 0
    verdicts = {v.label: v.verdict for v in r.verdicts()}
    assert verdicts["window"] == "present" and verdicts["lambda"] != "present"
    text = " ".join(r.findings())
    assert "without the initial tokens" in text and "farther from" in text


def test_errors_and_figures():
    t = make_trace(N, train_len=T)
    with pytest.raises(InvalidArgumentError):
        position_subspaces(t, layers=[7])
    with pytest.raises(InvalidArgumentError):
        position_subspaces(t, n_components=0)
    empty = dataclasses.replace(
        t,
        hidden=np.zeros((0, 0, 8), np.float16),
        hidden_layers=np.zeros(0, np.int64),
        hidden_positions=np.zeros(0, np.int64),
    )
    with pytest.raises(InvalidArgumentError):
        position_subspaces(empty)
    r = position_subspaces(_rep(planted=True, windows=2))
    for fig in r.figures():
        fig.to_json()
    assert r.figures()[0].layout.shapes[0].x0 == T
