"""Estimates with intervals between independent windows, and verdicts decided from them.

A key figure is never one number from one text: it is the mean of one value per independent
window (a different book, or a distant offset of one text), with a 95% interval taken between
windows (Student t, or a percentile bootstrap), and its `n`, the number of windows.
A `Verdict` says whether a factor is `present`, `absent` or `inconclusive` for one run label,
decided from an interval *net of its null* (the same statistic where nothing is out of
distribution) against a practical margin:

    present       ci_low  >  margin          (the effect is larger than the margin, surely)
    absent        ci_high <  margin          (whatever the effect, it is smaller than the margin)
    inconclusive  otherwise (the interval straddles the margin, or n < 2)

Words are generated from verdicts and intervals only (`describe`), never from a bare estimate.

Example:
    >>> e = estimate([1.0, 1.2, 0.8, 1.1], figure="logit excess", label="baseline", unit="logit units")
    >>> (round(e.estimate, 3), e.n, e.ci_low > 0)
    (1.025, 4, True)
    >>> decide(e, margin=0.5)
    'present'
    >>> decide(estimate([0.1, -0.1, 0.05, 0.0]), margin=0.5)
    'absent'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

FACTORS = ("logit_explosion", "entropy_growth", "implicit_position", "loss_breakdown")
VERDICTS = ("present", "absent", "inconclusive")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """One key figure for one run label: mean over `n` independent units with a 95% interval.

    `values` are the per-window (or per-trial) values it was computed from; `null` names the
    reference it is net of ("" when none), `method` how the interval was taken.
    """

    figure: str
    label: str
    estimate: float
    ci_low: float
    ci_high: float
    n: int
    unit: str = ""
    null: str = ""
    method: str = "t"
    values: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict:
        """The JSON record `{figure, label, estimate, ci_low, ci_high, n, unit}` (+ null, method)."""
        d = asdict(self)
        d.pop("values")
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)

    def text(self, digits: int = 2) -> str:
        """'1.03 (95% CI 0.81 to 1.25, n=4)'; without an interval '1.03 (n=1, no interval)'.

        >>> estimate([1.0, 1.2, 0.8, 1.1]).text()
        '1.02 (95% CI 0.75 to 1.30, n=4)'
        """
        if not math.isfinite(self.estimate):
            return "n/a"
        v = f"{self.estimate:.{digits}f}"
        if math.isfinite(self.ci_low) and self.ci_high == math.inf:  # censored above (e.g. "fluent until")
            return f"{v} (95% CI {self.ci_low:.{digits}f} to ≥ the window's end, n={self.n})"
        if not self.has_interval:
            return f"{v} (n={self.n}, no interval)"
        return f"{v} (95% CI {self.ci_low:.{digits}f} to {self.ci_high:.{digits}f}, n={self.n})"


@dataclass(frozen=True)
class Verdict:
    """Whether `factor` is present for `label`, from the interval of `figure` against `margin`."""

    factor: str
    label: str
    verdict: str
    figure: str = ""
    margin: float = float("nan")
    tests: str = ""  # what this verdict tests, in words (a patched line is described as what it tests)

    def to_dict(self) -> dict:
        """The JSON record `{factor, label, verdict}` (+ figure, margin, tests)."""
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values; Student t interval (NaN bounds when n < 2).

    >>> m, lo, hi, n = t_interval([1.0, 2.0, 3.0])
    >>> m, n, round(hi - m, 3)
    (2.0, 3, 2.484)
    """
    v = _finite(values)
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def bootstrap_interval(
    values: Iterable[float], confidence: float = CONFIDENCE, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with a seeded percentile bootstrap of the mean (NaN bounds when n < 2).

    >>> m, lo, hi, n = bootstrap_interval([1.0, 2.0, 3.0, 4.0])
    >>> m, lo <= m <= hi, n
    (2.5, True, 4)
    """
    v = _finite(values)
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    if n < 2:
        return float(v.mean()), float("nan"), float("nan"), n
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(resamples, n))].mean(1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(v.mean()), float(lo), float(hi), n


def estimate(
    values: Iterable[float], *, figure: str = "", label: str = "", unit: str = "", null: str = "",
    method: str = "t",
) -> Estimate:
    """The `Estimate` of the mean of per-window `values` (NaN values are dropped from n).

    method "t" (default) or "bootstrap".
    """
    vals = tuple(float(v) for v in values)
    fn = t_interval if method == "t" else bootstrap_interval
    m, lo, hi, n = fn(vals)
    return Estimate(figure, label, m, lo, hi, n, unit, null, method, vals)


def paired_difference(
    values: Sequence[float], null: Sequence[float], *, figure: str = "", label: str = "", unit: str = "",
    null_name: str = "",
) -> Estimate:
    """The estimate of values - null, paired by window (windows where either is NaN drop out)."""
    diff = [a - b for a, b in zip(values, null, strict=True)]
    return estimate(diff, figure=figure, label=label, unit=unit, null=null_name)


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(proportion, low, high): the Wilson score interval for a binomial proportion.

    >>> p, lo, hi = wilson(45, 50)
    >>> round(p, 2), round(lo, 3), round(hi, 3)
    (0.9, 0.786, 0.957)
    >>> wilson(0, 0)[0] != wilson(0, 0)[0]   # NaN without trials
    True
    """
    if trials <= 0:
        return float("nan"), float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    den = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return p, max(0.0, centre - half), min(1.0, centre + half)


def proportion(
    successes: int, trials: int, *, figure: str = "", label: str = "", unit: str = "fraction"
) -> Estimate:
    """A proportion as an `Estimate` with its Wilson interval (n = trials)."""
    p, lo, hi = wilson(successes, trials)
    return Estimate(figure, label, p, lo, hi, int(trials), unit, "", "wilson")


def decide(net: Estimate, margin: float) -> str:
    """`present`, `absent` or `inconclusive` from an interval net of its null (module docstring).

    >>> decide(Estimate("x", "b", 1.0, 0.2, 1.8, 4), margin=0.1)
    'present'
    >>> decide(Estimate("x", "b", 1.0, float("nan"), float("nan"), 1), margin=0.1)
    'inconclusive'
    """
    if not net.has_interval or net.n < 2:
        return "inconclusive"
    if net.ci_low > margin:
        return "present"
    if net.ci_high < margin:
        return "absent"
    return "inconclusive"


def verdict(
    factor: str, net: Estimate, margin: float, tests: str = ""
) -> Verdict:
    """The `Verdict` on `factor` for `net.label`, decided by `decide`."""
    if factor not in FACTORS:
        raise ValueError(f"factor {factor!r}; known factors: {', '.join(FACTORS)}")
    return Verdict(factor, net.label, decide(net, margin), net.figure, margin, tests)


def describe(v: Verdict, net: Estimate, *, subject: str, present: str, absent: str, digits: int = 2) -> str:
    """One sentence from a verdict and its interval; the words follow the verdict, never the estimate.

    >>> e = estimate([1.0, 1.2, 0.8, 1.1], figure="logit excess", label="baseline")
    >>> v = verdict("logit_explosion", e, 0.5)
    >>> describe(v, e, subject="The baseline", present="explodes", absent="stays in range")
    'The baseline explodes: logit excess 1.02 (95% CI 0.75 to 1.30, n=4) against a margin of 0.50.'
    """
    if v.verdict == "present":
        head = f"{subject} {present}"
    elif v.verdict == "absent":
        head = f"{subject} {absent}"
    else:
        why = "only one window, no interval" if not net.has_interval else "the interval straddles the margin"
        head = f"{subject}: inconclusive ({why})"
    return f"{head}: {net.figure} {net.text(digits)} against a margin of {v.margin:.{digits}f}."


__all__ = [
    "CONFIDENCE",
    "FACTORS",
    "VERDICTS",
    "Estimate",
    "Verdict",
    "bootstrap_interval",
    "decide",
    "describe",
    "estimate",
    "paired_difference",
    "proportion",
    "t_interval",
    "verdict",
    "wilson",
]
