"""Least-squares fits of y = a + b ln n, vectorized over leading axes, NaN-tolerant."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from lminf_diag.analyze.base import as_float


@dataclass
class LogFit:
    """Least-squares fit y = intercept + slope * ln n; NaN fields when fewer than 2 (CI: 3) points.

    r2 is NaN when y is constant (R² undefined); the CI is 95% from the t distribution.
    """

    slope: float = float("nan")
    intercept: float = float("nan")
    stderr: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    r2: float = float("nan")
    n_points: int = 0


def fit_log_many(n: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorized fit of y[..., i] = a + b ln n[i], ignoring NaN in y.

    Returns arrays of shape y.shape[:-1]: slope, intercept, stderr, r2, count.

    >>> out = fit_log_many(np.arange(1, 50), np.log(np.arange(1, 50))[None])
    >>> round(float(out["slope"][0]), 9)
    1.0
    """
    lx = np.log(np.asarray(n, dtype=np.float64))  # (n,)
    y = np.asarray(y, dtype=np.float64)  # (..., n)
    w = np.isfinite(y) & np.isfinite(lx)
    yz = np.where(w, y, 0.0)
    cnt = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * lx).sum(-1) / cnt
        my = yz.sum(-1) / cnt
        dx = np.where(w, lx - mx[..., None], 0.0)
        dy = np.where(w, yz - my[..., None], 0.0)
        sxx, sxy, syy = (dx * dx).sum(-1), (dx * dy).sum(-1), (dy * dy).sum(-1)
        ok = (cnt >= 2) & (sxx > 0)
        slope = np.where(ok, sxy / sxx, np.nan)
        intercept = my - slope * mx
        ss_res = (np.where(w, dy - slope[..., None] * dx, 0.0) ** 2).sum(-1)
        r2 = np.where(ok & (syy > 0), 1.0 - ss_res / syy, np.nan)
        stderr = np.where(ok & (cnt > 2), np.sqrt(ss_res / np.maximum(cnt - 2, 1) / sxx), np.nan)
    return {"slope": slope, "intercept": intercept, "stderr": stderr, "r2": r2, "count": cnt}


def fit_log(n: np.ndarray, y: np.ndarray) -> LogFit:
    """One fit of y = a + b ln n with a 95% confidence interval on b.

    >>> f = fit_log(np.arange(1, 129), np.log(np.arange(1, 129)))
    >>> round(f.slope, 9), round(f.r2, 9)
    (1.0, 1.0)
    """
    out = {k: v.item() for k, v in fit_log_many(n, np.asarray(y)[None]).items()}
    dof = int(out["count"]) - 2
    half = stats.t.ppf(0.975, dof) * out["stderr"] if dof > 0 else float("nan")
    return LogFit(
        slope=as_float(out["slope"]),
        intercept=as_float(out["intercept"]),
        stderr=as_float(out["stderr"]),
        ci_low=as_float(out["slope"] - half),
        ci_high=as_float(out["slope"] + half),
        r2=as_float(out["r2"]),
        n_points=int(out["count"]),
    )
