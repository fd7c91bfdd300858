"""The outcome: per-token loss against position, within vs beyond the training length.

`nll[t] = -log p(x_t | x_<t)` (nats); NaN entries (nll[0], skipped tokens) are ignored
everywhere. Smoothing is a centred moving average over `smooth` tokens (shorter at the edges);
span means average consecutive, non-overlapping `span`-token blocks starting at position 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lminf_diag.analyze.base import (
    AnalysisResult,
    as_float,
    downsample_index,
    label_colors,
    line_figure,
    mark_train_len,
)
from lminf_diag.capture.comparison import as_traces, common_train_len
from lminf_diag.capture.trace import Trace
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


@dataclass
class PerplexityStats:
    """One label's loss curve and span means."""

    label: str
    position: np.ndarray  # (N,)
    nll: np.ndarray  # (N,) nats, NaN where undefined
    smoothed: np.ndarray  # (N,) moving average over `smooth` tokens
    span_start: np.ndarray  # (S,) first position of each span
    span_nll: np.ndarray  # (S,) mean NLL of the span (NaN if empty)
    span_count: np.ndarray  # (S,) finite tokens in the span
    nll_within: float = float("nan")
    nll_beyond: float = float("nan")


@dataclass
class PerplexityResult(AnalysisResult):
    """Result of `perplexity_by_position`; `per_label` maps label -> PerplexityStats."""

    per_label: dict[str, PerplexityStats] = field(default_factory=dict)
    smooth: int = 256
    span: int = 1024
    title: str = "Loss by position"
    description: str = (
        "Negative log-likelihood of each next token (moving average), against its position in the text. "
        "A model that breaks down past its training length shows the loss rising after the dashed line; "
        "a working fix keeps it level."
    )

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> nll_within, nll_beyond, ppl_within, ppl_beyond, nll_increase (beyond - within)."""
        out = {}
        for lab, s in self.per_label.items():
            out[lab] = {
                "nll_within": s.nll_within,
                "nll_beyond": s.nll_beyond,
                "ppl_within": float(np.exp(s.nll_within)),
                "ppl_beyond": float(np.exp(s.nll_beyond)),
                "nll_increase": s.nll_beyond - s.nll_within,
            }
        return {lab: {k: float(v) for k, v in d.items()} for lab, d in out.items()}

    def to_frame(self) -> pd.DataFrame:
        """Span means: columns label, span_start, span_end, nll, ppl, n_tokens."""
        frames = [
            pd.DataFrame(
                {
                    "label": lab,
                    "span_start": s.span_start,
                    "span_end": np.minimum(s.span_start + self.span, s.position.size),
                    "nll": s.span_nll,
                    "ppl": np.exp(s.span_nll),
                    "n_tokens": s.span_count,
                }
            )
            for lab, s in self.per_label.items()
        ]
        return pd.concat(frames, ignore_index=True)

    def curve_frame(self) -> pd.DataFrame:
        """Per token: columns label, position, nll, smoothed."""
        frames = [
            pd.DataFrame({"label": lab, "position": s.position, "nll": s.nll, "smoothed": s.smoothed})
            for lab, s in self.per_label.items()
        ]
        return pd.concat(frames, ignore_index=True)

    def figures(self) -> list[go.Figure]:
        """Smoothed NLL vs position, and span-mean NLL vs position, one colour per label."""
        colors = label_colors(self.labels)
        curve = line_figure(
            self.title, "position (tokens)", f"NLL (nats, {self.smooth}-token moving average)"
        )
        spans = line_figure(f"Mean loss per {self.span}-token span", "span start (tokens)", "mean NLL (nats)")
        for lab, s in self.per_label.items():
            idx = downsample_index(s.position.size)
            curve.add_trace(
                go.Scatter(x=s.position[idx], y=s.smoothed[idx], name=lab, line={"color": colors[lab]})
            )
            j = downsample_index(s.span_start.size)
            spans.add_trace(
                go.Scatter(
                    x=s.span_start[j],
                    y=s.span_nll[j],
                    name=lab,
                    mode="lines+markers",
                    line={"color": colors[lab], "shape": "hv"},
                )
            )
        mark_train_len(curve, self.train_len)
        mark_train_len(spans, self.train_len)
        return [curve, spans]


def _stats(label: str, trace: Trace, train_len: int | None, smooth: int, span: int) -> PerplexityStats:
    nll = np.asarray(trace.nll, dtype=np.float64)  # (N,)
    nll = np.where(np.isfinite(nll), nll, np.nan)
    pos = np.arange(nll.size)  # nll is per token; trace.positions may be a strided subset
    starts = np.arange(0, nll.size, span)  # (S,)
    finite = np.isfinite(nll)
    sums = np.add.reduceat(np.where(finite, nll, 0.0), starts) if nll.size else np.empty(0)
    counts = np.add.reduceat(finite.astype(np.int64), starts) if nll.size else np.empty(0, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        span_nll = np.where(counts > 0, sums / counts, np.nan)
    early = pos < train_len if train_len is not None else np.ones(pos.size, bool)
    return PerplexityStats(
        label=label,
        position=pos,
        nll=nll,
        smoothed=moving_average(nll, smooth),
        span_start=starts,
        span_nll=span_nll,
        span_count=counts,
        nll_within=as_float(np.nanmean(nll[early])) if np.isfinite(nll[early]).any() else float("nan"),
        nll_beyond=as_float(np.nanmean(nll[~early])) if np.isfinite(nll[~early]).any() else float("nan"),
    )


def perplexity_by_position(
    trace_or_cmp, *, train_len: int | None = None, smooth: int = 256, span: int | None = None
) -> PerplexityResult:
    """Per-position loss, smoothed and in spans; mean NLL and perplexity within/beyond train_len.

    span defaults to 1024 tokens, halved until at least two spans fit in the training length.

    >>> from tests.synthetic import make_trace
    >>> s = perplexity_by_position(make_trace(n=256, train_len=64)).summary()["baseline"]
    >>> round(s["nll_within"], 6), s["nll_beyond"] > s["nll_within"]
    (2.0, True)
    """
    if smooth < 1 or (span is not None and span < 1):
        raise InvalidArgumentError(f"smooth={smooth}, span={span}; both must be >= 1 token")
    traces = as_traces(trace_or_cmp)
    tl = common_train_len(traces, train_len)
    if span is None:
        span = 1024
        while tl is not None and span > 1 and 2 * span > tl:
            span //= 2
    per_label = {lab: _stats(lab, t, tl, smooth, span) for lab, t in traces.items()}
    return PerplexityResult(labels=list(traces), train_len=tl, per_label=per_label, smooth=smooth, span=span)
