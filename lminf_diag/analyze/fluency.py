"""Per-window loss statistics: the in-range reference, log bins to the end, and "fluent until".

Definitions (one window of per-token NLL `nll` (N,), nats, NaN where undefined; T the training length):

- **in-range loss**: the mean over positions [T/2, T). Inside the training length, with ample
  context: the first tokens of a window have little context and a high loss (the cold start),
  so "within T" never averages 0..T. The same reference is used by every loss figure.
- **loss past T**: the mean over positions [T, end), `end` the last computed position + 1
  (a run stopped early, e.g. a capped baseline, stops there).
- **bins**: log-spaced, `bins_per_octave` per doubling of the position (4 by default), with
  edges at T/2 and T, running to the END of the window (the last bin closes at N). The first
  bins hold few tokens (positions 1, 2, 3, ...), the last ones thousands.
- **fluent until**: a *sustained* crossing. Over the bins that start at or after T, a bin is
  "above" when its mean exceeds (1 + tolerance) x the window's in-range loss. The window is
  fluent until the start of the first run of `sustain` consecutive above-bins (3 by default,
  three quarters of an octave). One noisy bin that comes back does not count. When no such
  run exists, the value is *censored*: the model is fluent to at least the start of a trailing
  run of above-bins too short to confirm, or to the end of the window; it is shown as "≥ n".
  With an in-distribution reference on the same tokens (the recomputed loss), a bin is "above"
  when its mean exceeds (1 + tolerance) x the reference's mean over the same bin: like with
  like, so content that is simply harder past T does not count as a crossing.

Over windows, "fluent until" is summarised by its median with a distribution-free
order-statistic interval (`censored_median`): a mean is wrong when some windows are censored.
Censored windows count at their censoring value for the lower bound and the median (a lower
bound on the median when they matter) and as +inf for the upper bound (ci_high = inf: "≥").

Example:
    >>> nll = np.r_[np.nan, np.full(127, 5.0), np.full(128, 2.0), np.full(768, 4.0)]
    >>> in_range_loss(nll, 256), loss_past(nll, 256)
    (2.0, 4.0)
    >>> edges = loss_bin_edges(1024, 256)
    >>> int(edges[-1]), 128 in edges, 256 in edges
    (1024, True, True)
    >>> f = window_fluency(nll, 256, edges)
    >>> f.value, f.censored
    (256, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lminf_diag.analyze.estimate import CONFIDENCE, Estimate
from lminf_diag.errors import InvalidArgumentError

TOLERANCE = 0.10  # "fluent": bin loss at most (1 + TOLERANCE) x the in-range loss
SUSTAIN = 3  # consecutive bins above the band that make a crossing
BINS_PER_OCTAVE = 4


def _arr(nll: np.ndarray) -> np.ndarray:
    a = np.asarray(nll, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def _mean(part: np.ndarray) -> float:
    finite = np.isfinite(part)
    return float(part[finite].mean()) if finite.any() else float("nan")


def in_range_loss(nll: np.ndarray, train_len: int) -> float:
    """Mean NLL over positions [T/2, T) (NaN when none is finite).

    >>> in_range_loss(np.r_[np.full(64, 9.0), np.full(64, 1.0), np.full(128, 3.0)], 128)
    1.0
    """
    return _mean(_arr(nll)[train_len // 2 : train_len])


def loss_past(nll: np.ndarray, train_len: int) -> float:
    """Mean NLL over positions [T, end) (NaN when the window stops before T).

    >>> loss_past(np.r_[np.full(128, 1.0), np.full(64, 3.0), np.full(64, np.nan)], 128)
    3.0
    """
    return _mean(_arr(nll)[train_len:])


def computed_end(nll: np.ndarray) -> int:
    """The last finite position + 1 (0 when none): where a run that was stopped early ends.

    >>> computed_end(np.array([np.nan, 1.0, 2.0, np.nan]))
    3
    """
    idx = np.nonzero(np.isfinite(np.asarray(nll, dtype=np.float64)))[0]
    return int(idx[-1]) + 1 if idx.size else 0


def loss_bin_edges(n: int, train_len: int, bins_per_octave: int = BINS_PER_OCTAVE) -> np.ndarray:
    """(B + 1,) integer bin edges from 1 to n, log-spaced, with edges at T/2 and T; the last is n.

    >>> loss_bin_edges(64, 16, 1).tolist()
    [1, 2, 4, 8, 16, 32, 64]
    """
    if n < 2 or train_len < 1 or bins_per_octave < 1:
        raise InvalidArgumentError(
            f"n={n}, train_len={train_len}, bins_per_octave={bins_per_octave}: "
            "need n >= 2 and both others >= 1"
        )
    count = int(math.ceil(math.log2(n) * bins_per_octave)) + 1
    edges = np.round(np.geomspace(1, n, count)).astype(np.int64)
    extra = [e for e in (max(1, train_len // 2), train_len) if 1 <= e < n]
    return np.unique(np.r_[edges, extra, 1, n])


def binned_loss(nll: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(means (B,), counts (B,)): mean NLL over each bin [edges[i], edges[i+1]) and its finite count.

    >>> m, c = binned_loss(np.array([np.nan, 1.0, 2.0, 4.0]), np.array([1, 2, 4]))
    >>> m.tolist(), c.tolist()
    ([1.0, 3.0], [1, 2])
    """
    a = _arr(nll)
    finite = np.isfinite(a)
    csum = np.r_[0.0, np.cumsum(np.where(finite, a, 0.0))]
    ccnt = np.r_[0, np.cumsum(finite)]
    lo, hi = np.clip(edges[:-1], 0, a.size), np.clip(edges[1:], 0, a.size)
    cnt = ccnt[hi] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)
    return means, cnt.astype(np.int64)


@dataclass(frozen=True)
class Fluency:
    """One window's "fluent until": the first position of a sustained crossing, or a censored bound.

    `value` is in tokens (NaN when undefined, e.g. no in-range loss); `censored` means the window
    never confirmed a crossing, so the model is fluent to *at least* `value`.
    """

    value: float
    censored: bool
    threshold: float = float("nan")  # (1 + tolerance) x the in-range loss

    def text(self) -> str:
        """'≥ 1024' when censored, '512' otherwise, 'n/a' when undefined.

        >>> Fluency(1024, True).text(), Fluency(512, False).text()
        ('≥ 1024', '512')
        """
        if not math.isfinite(self.value):
            return "n/a"
        return f"≥ {int(self.value)}" if self.censored else str(int(self.value))


def sustained_crossing(
    starts: np.ndarray, means: np.ndarray, threshold: float | np.ndarray, *, end: int, sustain: int = SUSTAIN
) -> Fluency:
    """The first run of `sustain` consecutive bins whose mean is above `threshold` (a number, or one
    per bin; bins given in order, NaN bins skipped); censored at the start of a trailing, too-short
    run, else at `end`.

    >>> starts, above = np.arange(0, 80, 10), np.array([1, 1, 9, 1, 9, 9, 9, 9.0])
    >>> sustained_crossing(starts, above, 5.0, end=80).value
    40
    >>> f = sustained_crossing(starts, np.array([1, 1, 9, 1, 1, 1, 9, 9.0]), 5.0, end=80)
    >>> f.value, f.censored
    (60, True)
    """
    if sustain < 1:
        raise InvalidArgumentError(f"sustain={sustain}; a crossing needs at least 1 bin")
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), np.shape(means))
    scalar = float(np.nanmean(thr)) if np.isfinite(thr).any() else float("nan")
    if not math.isfinite(scalar):
        return Fluency(float("nan"), False, scalar)
    keep = np.isfinite(means) & np.isfinite(thr)
    s, above = np.asarray(starts)[keep], np.asarray(means)[keep] > thr[keep]
    threshold = scalar
    run = 0
    for i in range(above.size):
        run = run + 1 if above[i] else 0
        if run == sustain:
            return Fluency(int(s[i - sustain + 1]), False, threshold)
    if run:  # a trailing run of above-bins, too short to confirm
        return Fluency(int(s[above.size - run]), True, threshold)
    return Fluency(int(end), True, threshold)


def window_fluency(
    nll: np.ndarray,
    train_len: int,
    edges: np.ndarray,
    *,
    tolerance: float = TOLERANCE,
    sustain: int = SUSTAIN,
    reference: np.ndarray | None = None,
) -> Fluency:
    """ "Fluent until" of one window: bins starting at or after T, against (1 + tolerance) x the in-range
    loss, or x the `reference` (N,) per-token loss of the same tokens over the same bin when given."""
    means, _ = binned_loss(nll, edges)
    end = computed_end(nll)
    starts = edges[:-1]
    past = (starts >= train_len) & (starts < end)
    if reference is None:
        threshold: float | np.ndarray = (1 + tolerance) * in_range_loss(nll, train_len)
    else:
        threshold = (1 + tolerance) * binned_loss(reference, edges)[0][past]
    return sustained_crossing(starts[past], means[past], threshold, end=end, sustain=sustain)


def _order_index(n: int, confidence: float) -> tuple[int, float]:
    """(j, coverage): the widest-needed 1-based order statistic j with [x_(j), x_(n+1-j)] covering
    the median at >= confidence; j = 1 (min..max) with its lower coverage when n is too small."""
    best = 1
    for j in range(1, n // 2 + 1):
        if 1 - 2 * stats.binom.cdf(j - 1, n, 0.5) >= confidence:
            best = j
        else:
            break
    return best, float(1 - 2 * stats.binom.cdf(best - 1, n, 0.5))


def censored_median(
    values: Sequence[float],
    censored: Sequence[bool],
    *,
    figure: str = "",
    label: str = "",
    unit: str = "tokens",
    confidence: float = CONFIDENCE,
) -> Estimate:
    """The median of per-window values, some right-censored, with an order-statistic interval.

    ci_high is +inf when the upper order statistic is censored; the method string says the
    interval's exact coverage (below 95% when n <= 5: min..max then covers 1 - 2^(1-n)) and
    whether the median itself is only a lower bound.

    >>> e = censored_median([100, 200, 300, 400, 500, 600], [False] * 5 + [True])
    >>> e.estimate, e.ci_low, e.ci_high
    (350.0, 100.0, inf)
    """
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    c = np.asarray(list(censored), dtype=bool)
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    n = int(v.size)
    vals = tuple(float(x) for x in values)
    if n == 0:
        return Estimate(figure, label, float("nan"), float("nan"), float("nan"), 0, unit, "", "median", vals)
    low_side = np.sort(v)
    high_side = np.sort(np.where(c, np.inf, v))
    med = float(np.median(low_side))
    bound = not np.isclose(np.median(high_side), med)
    if n < 2:
        method = "median of 1 window, no interval"
        return Estimate(figure, label, med, float("nan"), float("nan"), n, unit, "", method, vals)
    j, coverage = _order_index(n, confidence)
    lo, hi = float(low_side[j - 1]), float(high_side[n - j])
    method = f"median, order-statistic interval ({coverage:.1%} coverage)"
    if c.any():
        method += f"; {int(c.sum())} censored window(s) count as ≥ their value"
    if bound:
        method += "; the median is a lower bound (≥)"
    return Estimate(figure, label, med, lo, hi, n, unit, "", method, vals)


__all__ = [
    "BINS_PER_OCTAVE",
    "SUSTAIN",
    "TOLERANCE",
    "Fluency",
    "binned_loss",
    "censored_median",
    "computed_end",
    "in_range_loss",
    "loss_bin_edges",
    "loss_past",
    "sustained_crossing",
    "window_fluency",
]
