"""Per-window statistics of factor 2 (attention entropy growing with the number of keys attended).

x is the number of keys a row actually attends, taken from the run's plan (`attended_counts`),
never position + 1 for a masked run: under the Λ-mask it is capped at n_local + n_global, so a
flat line past T is built in and tests nothing.

runs that attend every key (baseline, `cap_only`)
    slope of mean entropy against ln x over rows with x in (T, x_max], and, as the null, the same
    fit over as many octaves just below T, x in (T^2 / x_max, T]: the growth rate a model shows
    where nothing is out of distribution. `cap_only` keeps every key but no unseen distance: its
    net slope isolates factor 2 (more keys, Proposition 1) from factor 1.

Λ-masked runs (`lambda`, `mask_only`, `window`)
    the entropy gap at an equal attended count: mean entropy of the rows past T minus the
    baseline's mean entropy over its rows attending within T/8 keys of the same count (same
    window, so the same text).

Example:
    >>> attended_counts(np.array([0, 5, 9, 20]), {"mode": "lambda", "n_local": 8, "n_global": 2}).tolist()
    [1, 6, 10, 10]
    >>> attended_counts(np.array([0, 20]), {"mode": "window", "n_local": 8, "n_global": 2}).tolist()
    [1, 8]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lminf_diag.analyze.base import nanmean
from lminf_diag.analyze.fit import fit_log_many
from lminf_diag.analyze.logit_stats import attends_every_key
from lminf_diag.capture.trace import Trace

BAND_FRACTION = 8  # equal-count comparison: baseline rows within T // 8 keys of the patched count


def attended_counts(positions: np.ndarray, patch: dict | None) -> np.ndarray:
    """(N,) keys attended by the query rows at `positions` under `patch` (None: the baseline)."""
    pos = np.asarray(positions, dtype=np.int64)
    full = pos + 1
    if not patch or patch.get("mode") == "cap_only":
        return full
    n_local = int(patch["n_local"])
    local = np.minimum(full, n_local)
    if patch.get("mode") == "window":
        return local
    n_global = int(patch.get("n_global") or 0)
    return local + np.clip(pos - n_local + 1, 0, n_global)


def row_entropy(trace: Trace) -> np.ndarray:
    """(N,) mean entropy over captured layers and heads per measured row, layer by layer."""
    total = np.zeros(trace.entropy.shape[-1])
    count = np.zeros(trace.entropy.shape[-1])
    for li in range(trace.entropy.shape[0]):
        ent = np.asarray(trace.entropy[li], dtype=np.float64)  # (H, N)
        ok = np.isfinite(ent)
        total += np.where(ok, ent, 0.0).sum(0)
        count += ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _slope(x: np.ndarray, y: np.ndarray, sel: np.ndarray) -> float:
    if int(sel.sum()) < 3 or np.unique(x[sel]).size < 3:
        return float("nan")
    return float(fit_log_many(x[sel], y[sel][None])["slope"][0])


@dataclass
class WindowEntropyStats:
    """One window, one label."""

    x: np.ndarray  # (N,) keys attended per measured row
    y: np.ndarray  # (N,) mean entropy per row, nats
    slope_beyond: float = float("nan")  # every-key runs: fit over x in (T, x_max]
    slope_null: float = float("nan")  # the same number of octaves just below T
    octaves: float = float("nan")  # log2(x_max / T): the width of both fits
    gap: float = float("nan")  # masked runs: entropy past T minus the baseline's at equal count
    gap_count: float = float("nan")  # the attended count the gap compares at
    layer_slopes: np.ndarray | None = None  # (L,) every-key runs: slope past T per layer


def window_entropy_stats(trace: Trace, train_len: int, baseline: Trace | None) -> WindowEntropyStats:
    """The statistics of the module docstring for one window's trace (`baseline`: same window)."""
    pos = np.asarray(trace.positions)
    x = attended_counts(pos, trace.meta.patch)
    y = row_entropy(trace)
    out = WindowEntropyStats(x=x, y=y)
    tl = int(train_len)
    if attends_every_key(trace):
        read = np.isfinite(y)  # rows a stopped run (--baseline-length) never read are NaN
        x_max = int(x[read].max()) if read.any() else 0
        if x_max > tl:
            beyond = x > tl
            null = (x > tl * tl / x_max) & (x <= tl)
            out.slope_beyond, out.slope_null = _slope(x, y, beyond), _slope(x, y, null)
            out.octaves = float(np.log2(x_max / tl))
            if int(beyond.sum()) >= 3:
                ent = np.asarray(trace.entropy, dtype=np.float64)[..., beyond]  # (L, H, N')
                out.layer_slopes = fit_log_many(x[beyond], nanmean(ent, 1))["slope"]
        return out
    past = pos >= tl
    if baseline is None or not past.any():
        return out
    count = float(np.median(x[past]))
    bx = attended_counts(np.asarray(baseline.positions), None)
    near = (bx <= count) & (bx > count - max(1, tl // BAND_FRACTION))
    if near.any():
        out.gap = float(np.nanmean(y[past]) - np.nanmean(row_entropy(baseline)[near]))
        out.gap_count = count
    return out


__all__ = ["WindowEntropyStats", "attended_counts", "row_entropy", "window_entropy_stats"]
