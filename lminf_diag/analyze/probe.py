"""A linear position probe cross-validated with folds grouped by window (never within one text).

Positions shuffled inside one text leak the passage's content into the test fold: neighbouring
tokens share context, so a probe can "read the position" from content it saw at the next
position. Here every test fold is one or more *whole windows* the probe never saw:
leave-one-window-out for up to `MAX_FOLDS` windows, else `MAX_FOLDS` folds with window i in
fold i mod MAX_FOLDS. Each window gets its own held-out R² (1 - SS_res / SS_tot around that
window's mean target), so the scores are one value per independent window.

The probe: features standardised with the training windows' mean and std, ridge regression with
an intercept, its penalty chosen on the training windows only by generalised cross-validation
over ALPHAS x n. With fewer than two usable windows there is no grouped fold: every R² is NaN.

Example:
    >>> rng = np.random.default_rng(0)
    >>> pos = np.arange(100, 200)
    >>> direction = rng.normal(size=8)
    >>> xs = [np.log(pos)[:, None] * direction + 0.05 * rng.normal(size=(100, 8)) for _ in range(3)]
    >>> r2 = grouped_probe(xs, [np.log(pos + 1.0)] * 3)
    >>> bool((r2 > 0.9).all()), grouped_probe(xs[:1], [np.log(pos + 1.0)]).tolist()
    (True, [nan])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lminf_diag.analyze.hidden_stats import standardizer

MAX_FOLDS = 5
MIN_TEST_POINTS = 3  # fewer held-out states than this in a window: its R² is NaN
ALPHAS = np.logspace(-5, 1, 13)  # ridge penalties, in units of the number of training rows


def fold_of(n_windows: int, max_folds: int = MAX_FOLDS) -> np.ndarray:
    """(W,) fold index of each window: leave-one-out up to max_folds windows, else i mod max_folds.

    >>> fold_of(3).tolist(), fold_of(7, 5).tolist()
    ([0, 1, 2], [0, 1, 2, 3, 4, 0, 1])
    """
    return np.arange(n_windows) % max(1, min(n_windows, max_folds))


def _ridge_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mu (D,), sd (D,), beta (D,), intercept): standardise + ridge, alpha by GCV (float64)."""
    mu, sd = standardizer(x)
    xc = (np.asarray(x, dtype=np.float64) - mu) / sd  # (n, D)
    ym = float(np.mean(y))
    yc = np.asarray(y, dtype=np.float64) - ym
    n, d = xc.shape
    if n >= d:  # primal: eigen-decomposition of the (D, D) Gram matrix
        lam, v = np.linalg.eigh(xc.T @ xc)
        proj = v.T @ (xc.T @ yc)  # (D,) = s * z
    else:  # dual: (n, n) kernel matrix
        lam, u = np.linalg.eigh(xc @ xc.T)
        proj = None
        z = u.T @ yc
    lam = np.maximum(lam, 0.0)
    ok = lam > 1e-10 * max(float(lam.max()), 1e-300)
    if proj is not None:
        z = np.where(ok, proj / np.sqrt(np.where(ok, lam, 1.0)), 0.0)
    z = np.where(ok, z, 0.0)
    base = float(yc @ yc - z @ z)  # residual outside the span of the features
    best, alpha = np.inf, float(ALPHAS[0] * n)
    for a in ALPHAS * n:
        shrink = a / (lam + a)  # (r,)
        rss = base + float(np.sum((z * shrink) ** 2))
        df = float(np.sum(np.where(ok, lam / (lam + a), 0.0)))
        gcv = rss / (n * max(1.0 - df / n, 1e-6) ** 2)
        if gcv < best:
            best, alpha = gcv, float(a)
    inv = np.where(ok, 1.0 / (lam + alpha), 0.0)
    if proj is not None:
        beta = v @ (inv * proj)
    else:
        beta = xc.T @ (u @ (inv * z))
    return mu, sd, beta, ym


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot around y's own mean (NaN when y is constant or too short).

    >>> r2_score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    1.0
    """
    y = np.asarray(y, dtype=np.float64)
    if y.size < MIN_TEST_POINTS:
        return float("nan")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


def grouped_probe(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], max_folds: int = MAX_FOLDS
) -> np.ndarray:
    """(W,) held-out R² of each window: xs[w] (m_w, D) states, ys[w] (m_w,) targets.

    Windows with fewer than MIN_TEST_POINTS rows still train the other folds; their own R² is NaN.
    """
    w_n = len(xs)
    out = np.full(w_n, np.nan)
    if w_n != len(ys):
        raise ValueError(f"{w_n} state blocks but {len(ys)} target blocks")
    if sum(len(x) > 0 for x in xs) < 2:
        return out
    folds = fold_of(w_n, max_folds)
    for f in np.unique(folds):
        train = [i for i in range(w_n) if folds[i] != f and len(xs[i])]
        test = [i for i in range(w_n) if folds[i] == f and len(xs[i]) >= MIN_TEST_POINTS]
        if not train or not test:
            continue
        xt = np.concatenate([np.asarray(xs[i], dtype=np.float64) for i in train])  # (n, D)
        yt = np.concatenate([np.asarray(ys[i], dtype=np.float64) for i in train])  # (n,)
        if xt.shape[0] < 2 or np.ptp(yt) == 0:
            continue
        mu, sd, beta, ym = _ridge_fit(xt, yt)
        for i in test:
            pred = ym + ((np.asarray(xs[i], dtype=np.float64) - mu) / sd) @ beta
            out[i] = r2_score(ys[i], pred)
    return out


def shuffled(ys: Sequence[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """The targets permuted within each window (seeded): the null where states carry no position."""
    rng = np.random.default_rng(seed)
    return [np.asarray(y)[rng.permutation(len(y))] for y in ys]


def median_range(values: np.ndarray) -> tuple[float, float, float]:
    """(median, min, max) of the finite values (NaN when none).

    >>> median_range(np.array([0.2, np.nan, 0.5, 0.1]))
    (0.2, 0.1, 0.5)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan"), float("nan")
    return float(np.median(v)), float(v.min()), float(v.max())
