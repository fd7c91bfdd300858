"""The outcome: per-token loss against position, past the training length, over K windows.

`perplexity_by_position` turns traces into a `LossResult` (`analyze.loss`): the in-range
reference is the mean over positions T/2..T everywhere, log bins run to the end of the window,
"fluent until" is a sustained crossing with censoring marked (≥), and the `loss_breakdown`
verdict is decided from the interval between windows. Optional: the in-distribution reference
on the same tokens (`reference=`, from `evaluate.recompute.recompute_nll`) and a contamination
control (`control=`, the same runs on paragraph-shuffled copies, `data.control`).

`nll[t] = -log p(x_t | x_<t)` (nats); NaN entries (nll[0], skipped tokens) are ignored
everywhere. Smoothing is a centred moving average over `smooth` tokens (shorter at the edges;
by default T / 16, `smooth_window`);
span means average consecutive, non-overlapping `span`-token blocks starting at position 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lminf_diag.analyze.base import downsample_index, label_colors, line_figure, mark_train_len
from lminf_diag.analyze.fluency import BINS_PER_OCTAVE, SUSTAIN, TOLERANCE
from lminf_diag.analyze.forest import add_band, window_band
from lminf_diag.analyze.loss import RECOMPUTE, SHUFFLED, LossResult
from lminf_diag.capture.windows import as_windows, window_labels, windows_train_len
from lminf_diag.errors import InvalidArgumentError


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred NaN-aware moving average over `window` samples; NaN where a window holds no value.

    >>> moving_average(np.array([np.nan, 1.0, 2.0, 3.0]), 3).tolist()
    [1.0, 1.5, 2.0, 2.5]
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(finite)])
    i = np.arange(x.size)
    lo = np.clip(i - (window - 1) // 2, 0, x.size)
    hi = np.clip(i + window // 2 + 1, 0, x.size)
    cnt = ccnt[hi] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (csum[hi] - csum[lo]) / cnt, np.nan)


SMOOTH_FRACTION = 16  # the default moving average spans T / 16 tokens (512 at T = 8192, 8 at T = 128)


def smooth_window(train_len: int) -> int:
    """The default smoothing window of loss-by-position curves: T / 16 tokens (at least 1).

    >>> smooth_window(8192), smooth_window(128), smooth_window(8)
    (512, 8, 1)
    """
    return max(1, int(train_len) // SMOOTH_FRACTION)


@dataclass
class PerplexityStats:
    """One label's loss curve (mean over windows per position) and span means."""

    label: str
    position: np.ndarray  # (N,)
    nll: np.ndarray  # (N,) nats, mean over windows, NaN where undefined
    smoothed: np.ndarray  # (N,) moving average over `smooth` tokens
    span_start: np.ndarray  # (S,) first position of each span
    span_nll: np.ndarray  # (S,) mean NLL of the span over windows (NaN if empty)
    span_count: np.ndarray  # (S,) finite tokens in the span, all windows together
    nll_within: float = float("nan")  # mean over windows of the in-range loss (T/2..T)
    nll_beyond: float = float("nan")  # mean over windows of the loss past T


def _spans(rows: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts (S,), sums (W, S), counts (W, S)) of consecutive `span`-token blocks from position 0."""
    starts = np.arange(0, rows.shape[1], span)
    finite = np.isfinite(rows)
    sums = np.add.reduceat(np.where(finite, rows, 0.0), starts, axis=1)
    counts = np.add.reduceat(finite.astype(np.int64), starts, axis=1)
    return starts, sums, counts


@dataclass
class PerplexityResult(LossResult):
    """Result of `perplexity_by_position`: a `LossResult` plus per-token curves and span means."""

    smooth: int = 256
    span: int = 1024
    per_label: dict[str, PerplexityStats] = field(default_factory=dict)
    title: str = "Loss by position"
    description: str = (
        "Negative log-likelihood of each next token against its position, mean over windows (moving "
        "average), and per log-spaced bin to the end of the window. The in-range reference is the mean over "
        "positions T/2..T; a model that breaks down past its training length shows the loss rising after the "
        "dashed line, a working fix keeps it level. 'recompute' (when present) predicts every token from its "
        "last T tokens re-encoded: the in-distribution loss of the same tokens."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for lab in self.labels:
            rows = self.nll[lab]
            mean = _nan_mean(rows)
            starts, sums, counts = _spans(rows, self.span)
            tot = counts.sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                span_nll = np.where(tot > 0, sums.sum(0) / np.maximum(tot, 1), np.nan)
            legacy = self.legacy_summary(lab)
            self.per_label[lab] = PerplexityStats(
                lab,
                np.arange(rows.shape[1]),
                mean,
                moving_average(mean, self.smooth),
                starts,
                span_nll,
                tot,
                legacy["nll_within"],
                legacy["nll_beyond"],
            )

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> key figures (estimates) plus the older keys nll_within (T/2..T), nll_beyond, ppl_within,
        ppl_beyond, nll_increase (means over windows)."""
        base = super().summary()
        return {lab: {**base.get(lab, {}), **self.legacy_summary(lab)} for lab in self.labels}

    def to_frame(self) -> pd.DataFrame:
        """Span means per window: columns label, window, span_start, span_end, nll, ppl, n_tokens."""
        frames = []
        for lab in self.labels:
            starts, sums, counts = _spans(self.nll[lab], self.span)
            for i, name in enumerate(self.window_names):
                with np.errstate(invalid="ignore", divide="ignore"):
                    nll = np.where(counts[i] > 0, sums[i] / np.maximum(counts[i], 1), np.nan)
                frames.append(
                    pd.DataFrame(
                        {
                            "label": lab,
                            "window": name,
                            "span_start": starts,
                            "span_end": np.minimum(starts + self.span, self.length),
                            "nll": nll,
                            "ppl": np.exp(nll),
                            "n_tokens": counts[i],
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)

    def bin_frame(self) -> pd.DataFrame:
        """The log bins to the end of the window (`LossResult.to_frame`)."""
        return super().to_frame()

    def curve_frame(self) -> pd.DataFrame:
        """Per token: columns label, position, nll (mean over windows), smoothed."""
        frames = [
            pd.DataFrame({"label": lab, "position": s.position, "nll": s.nll, "smoothed": s.smoothed})
            for lab, s in self.per_label.items()
        ]
        return pd.concat(frames, ignore_index=True)

    def figures(self) -> list[go.Figure]:
        """Verdict nets, the smoothed loss curve (band: windows' min..max), log bins, fluent until."""
        colors = label_colors(self.labels)
        curve = line_figure(
            self.title, "position (tokens)", f"NLL (nats, {self.smooth}-token moving average)"
        )
        idx = downsample_index(self.length)
        for lab in self.labels if self.n_windows > 1 else []:  # every band first: under every line
            _, lo, hi = window_band([moving_average(r, self.smooth) for r in self.nll[lab]])
            add_band(curve, idx, lo[idx], hi[idx], colors[lab])
        for lab in self.labels:
            curve.add_trace(
                go.Scatter(x=idx, y=self.per_label[lab].smoothed[idx], name=lab, line={"color": colors[lab]})
            )
        mark_train_len(curve, self.train_len)
        forest, bins, fluency = super().figures()
        return [forest, curve, bins, fluency]


def _nan_mean(rows: np.ndarray) -> np.ndarray:
    finite = np.isfinite(rows)
    cnt = finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(finite, rows, 0.0).sum(0) / np.maximum(cnt, 1), np.nan)


def _rows(arrays: Sequence[Any]) -> np.ndarray:
    """(W, N) float64 from per-window 1-D arrays (shorter ones padded with NaN)."""
    arrs = [np.asarray(getattr(a, "nll", a), dtype=np.float64).ravel() for a in arrays]
    n = max(a.size for a in arrs)
    out = np.full((len(arrs), n), np.nan)
    for i, a in enumerate(arrs):
        out[i, : a.size] = np.where(np.isfinite(a), a, np.nan)
    return out


def _window_name(trace: Any, i: int) -> str:
    where = trace.meta.extra.get("window") if isinstance(trace.meta.extra, dict) else None
    if isinstance(where, dict) and "text" in where:
        return f"{where['text']}@{where.get('offset', 0)}"
    return trace.meta.text_source or f"window {i}"


def perplexity_by_position(
    obj: Any,
    *,
    train_len: int | None = None,
    smooth: int | None = None,
    span: int | None = None,
    reference: Any = None,
    control: Any = None,
    tolerance: float = TOLERANCE,
    sustain: int = SUSTAIN,
    bins_per_octave: int = BINS_PER_OCTAVE,
) -> PerplexityResult:
    """Loss past the training length over one window (a Trace or Comparison) or K (a `Replicate`).

    reference: the recomputed in-distribution reference, one per window (`RecomputeResult`s or
    (N,) arrays; a single one for one window): label "recompute".
    control: the same runs on paragraph-shuffled copies (a Comparison / Replicate with as many
    windows): labels "<label> (shuffled)".
    tolerance, sustain, bins_per_octave: "fluent until" (`analyze.fluency`).
    span defaults to 1024 tokens, halved until at least two spans fit in the training length.
    smooth (the moving-average window of the loss curve) defaults to `smooth_window(T)`: a fixed
    fraction of the training length, so a curve looks alike at T = 128 and at T = 8192.

    >>> from lminf_diag.synthetic import make_comparison
    >>> r = perplexity_by_position([make_comparison(n=256, train_len=64, seed=s) for s in range(3)])
    >>> s = r.summary()["baseline"]
    >>> round(s["nll_within"], 6), s["nll_beyond"] > s["nll_within"]
    (2.0, True)
    >>> [(v.label, v.verdict) for v in r.verdicts()]
    [('baseline', 'present'), ('lambda', 'absent')]
    """
    if (smooth is not None and smooth < 1) or (span is not None and span < 1):
        raise InvalidArgumentError(f"smooth={smooth}, span={span}; both must be >= 1 token")
    windows = as_windows(obj)
    labels = window_labels(windows)
    tl = windows_train_len(windows, train_len)
    if tl is None:
        raise InvalidArgumentError("the training length is unknown; pass train_len=N")
    smooth = smooth if smooth is not None else smooth_window(tl)
    if span is None:
        span = 1024
        while span > 1 and 2 * span > tl:
            span //= 2
    nll = {lab: _rows([w[lab].nll for w in windows]) for lab in labels}
    costs: dict[str, str] = {}
    if reference is not None:
        refs = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        if len(refs) != len(windows):
            raise InvalidArgumentError(
                f"reference has {len(refs)} window(s), the traces {len(windows)}; one each"
            )
        nll[RECOMPUTE] = _rows(refs)
        done = [r for r in refs if hasattr(r, "forward_tokens")]
        if done:  # RecomputeResults: state what the reference cost
            costs[RECOMPUTE] = (
                f"{sum(r.forward_tokens for r in done)} forward tokens over {len(done)} window(s) "
                f"({sum(r.forward_tokens for r in done) / max(1, sum(r.n_tokens for r in done)):.2f}x "
                "one plain "
                f"pass), {sum(r.seconds for r in done):.1f} s; stride {done[0].stride}"
            )
    if control is not None:
        ctl = as_windows(control)
        if len(ctl) != len(windows):
            raise InvalidArgumentError(
                f"control has {len(ctl)} window(s), the traces {len(windows)}; one each"
            )
        for lab in window_labels(ctl):
            nll[lab + SHUFFLED] = _rows([w[lab].nll for w in ctl])
    n = max(a.shape[1] for a in nll.values())
    nll = {lab: np.pad(a, ((0, 0), (0, n - a.shape[1])), constant_values=np.nan) for lab, a in nll.items()}
    first = [next(iter(w.values())) for w in windows]
    from_books = any(str(t.meta.text_source).startswith("book:") for t in first)
    return PerplexityResult(
        labels=list(nll),
        train_len=tl,
        nll=nll,
        window_names=[_window_name(t, i) for i, t in enumerate(first)],
        tolerance=tolerance,
        sustain=sustain,
        bins_per_octave=bins_per_octave,
        from_books=from_books,
        costs=costs,
        smooth=smooth,
        span=span,
    )


__all__ = ["PerplexityResult", "PerplexityStats", "moving_average", "perplexity_by_position", "smooth_window"]
