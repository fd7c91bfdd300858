"""Per-window statistics of factor 1 (attention logits at unseen distances), like with like.

Two statistics, each measured at the real training length T and, as its null, at a pretend
training length T/2 where nothing is out of distribution (m = T // 8 keys per band):

paired excess at pivot P (runs that attend every key: the baseline, `cap_only`)
    for each profiled query row at position >= P + m, each layer and head:
        max logit over distances (P, P + m]  -  max logit over distances (P - m, P]
    averaged over rows, layers and heads. Both bands hold m keys of the same query, so the
    growth of a maximum with the number of keys (extreme values) cancels.

used-logit shift at pivot P (every run; the headline of Λ-masked runs)
    mean row-max logit over query rows in (P + m, 2P]  -  the same over rows in (P/2, P].
    For a Λ-masked run past T this asks whether the logits a row actually uses (local keys
    plus the global ones at the capped distance) look like in-range ones. Its key counts are
    not matched for the baseline (rows past P attend more keys): there the paired excess rules.

Example:
    >>> from lminf_diag.synthetic import make_trace
    >>> t = make_trace(n=512, train_len=128)
    >>> s = window_logit_stats(t, 128)
    >>> round(s.paired[128], 3), round(s.paired[64], 3)   # planted growth past T only
    (0.05, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lminf_diag.analyze.base import nanmax, nanmean
from lminf_diag.attention.stats import pair_anchors
from lminf_diag.capture.trace import Trace

CAPPED_MODES = ("lambda", "mask_only", "window", "streaming")  # rows past T attend a bounded set of keys


def attends_every_key(trace: Trace) -> bool:
    """True for the baseline and `cap_only` (every earlier key attended); False for Λ-masked runs."""
    patch = trace.meta.patch
    return not patch or patch.get("mode") not in CAPPED_MODES


@dataclass
class WindowLogitStats:
    """One window, one label: {pivot: value} for both statistics, and per-head paired excess at T."""

    paired: dict[int, float] = field(default_factory=dict)
    used: dict[int, float] = field(default_factory=dict)
    head_paired: np.ndarray | None = None  # (L, H) paired excess at T per head (mean over rows)
    paired_rows: int = 0  # profiled rows the paired excess at T averaged


def _band_columns(grid: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
    """Columns j whose band (grid[j-1], grid[j]] lies in (lo, hi]; None unless lo and hi are grid points."""
    if lo not in grid or hi not in grid:
        return None
    return np.nonzero((grid > lo) & (grid <= hi))[0]


def paired_excess(trace: Trace, pivot: int, m: int) -> tuple[float, np.ndarray | None, int]:
    """(mean paired excess, (L, H) per-head means, rows used) at `pivot`; NaN when not measurable."""
    band = np.asarray(trace.profile_band, dtype=np.float64)  # (L, H, R, P)
    grid = np.asarray(trace.profile_dist)
    rows = np.asarray(trace.profile_rows)
    near = _band_columns(grid, pivot - m, pivot)
    far = _band_columns(grid, pivot, pivot + m)
    sel = np.nonzero(rows >= pivot + m)[0]
    if band.size == 0 or near is None or far is None or sel.size == 0 or near.size == 0 or far.size == 0:
        return float("nan"), None, 0
    b = band[:, :, sel]  # (L, H, R', P)
    d = nanmax(b[..., far], -1) - nanmax(b[..., near], -1)  # (L, H, R')
    return float(nanmean(d)), nanmean(d, 2), int(sel.size)


def used_shift(trace: Trace, pivot: int, m: int) -> float:
    """Mean row-max logit over rows in (pivot + m, 2 pivot] minus over rows in (pivot / 2, pivot]."""
    pos = np.asarray(trace.positions)
    after = (pos > pivot + m) & (pos <= 2 * pivot)
    before = (pos > pivot // 2) & (pos <= pivot)
    if not after.any() or not before.any():
        return float("nan")
    ml = trace.max_logit  # (L, H, N)
    return float(nanmean(ml[..., after]) - nanmean(ml[..., before]))


def window_logit_stats(trace: Trace, train_len: int) -> WindowLogitStats:
    """Both statistics at the pivots of `pair_anchors(train_len)` (T and T // 2)."""
    out = WindowLogitStats()
    every = attends_every_key(trace)
    for pivot, (_lo, _p, hi) in pair_anchors(train_len).items():
        m = hi - pivot
        if every:
            value, heads, rows = paired_excess(trace, pivot, m)
            out.paired[pivot] = value
            if pivot == train_len:
                out.head_paired, out.paired_rows = heads, rows
        else:
            out.paired[pivot] = float("nan")
        out.used[pivot] = used_shift(trace, pivot, m)
    return out


def envelope(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(distance (P,), mean running-max profile (P,)) over layers, heads and profiled rows."""
    prof = np.asarray(trace.logit_profile, dtype=np.float64)  # (L, H, R, P)
    flat = prof.reshape(-1, prof.shape[-1]) if prof.size else np.zeros((0, len(trace.profile_dist)))
    return np.asarray(trace.profile_dist), nanmean(flat, 0)


__all__ = [
    "CAPPED_MODES",
    "WindowLogitStats",
    "attends_every_key",
    "envelope",
    "paired_excess",
    "used_shift",
    "window_logit_stats",
]
