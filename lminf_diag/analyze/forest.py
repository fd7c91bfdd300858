"""Figures every replicated result shares: estimates with their intervals, and curves over windows.

Example:
    >>> from lminf_diag.analyze.estimate import estimate
    >>> fig = forest_figure([estimate([1.0, 1.2, 0.9], figure="excess", label="baseline")], "Excess", "logits")
    >>> len(fig.data)
    1
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lminf_diag.analyze.base import label_colors, line_figure, nanmean
from lminf_diag.analyze.estimate import Estimate
from lminf_diag.analyze.palette import BAND_OPACITY, rgba


def forest_figure(
    estimates: Sequence[Estimate], title: str, x_title: str, *, margin: float | None = None
) -> object:
    """One row per estimate (figure · label), a dot at the estimate and a bar over its 95% interval.

    A dashed line marks 0 and, when given, a dotted one the verdict margin.
    """
    import plotly.graph_objects as go

    labels = list(dict.fromkeys(e.label for e in estimates))
    colors = label_colors(labels)
    fig = line_figure(title, x_title, "")
    for lab in labels:
        rows = [e for e in estimates if e.label == lab]
        fig.add_trace(
            go.Scatter(
                x=[e.estimate for e in rows],
                y=[f"{e.figure} · {e.label}" for e in rows],
                mode="markers",
                name=lab,
                marker={"color": colors[lab], "size": 9},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [max(0.0, e.ci_high - e.estimate) if e.has_interval else 0.0 for e in rows],
                    "arrayminus": [max(0.0, e.estimate - e.ci_low) if e.has_interval else 0.0 for e in rows],
                },
                customdata=[[e.n] for e in rows],
                hovertemplate="%{y}: %{x:.3f} (n=%{customdata[0]})<extra></extra>",
            )
        )
    fig.add_vline(x=0, line={"dash": "dash", "color": "gray", "width": 1})
    if margin is not None:
        fig.add_vline(x=margin, line={"dash": "dot", "color": "gray", "width": 1}, annotation_text="margin")
    fig.update_layout(height=max(260, 60 + 34 * len(estimates)), yaxis={"autorange": "reversed"})
    return fig


def window_band(curves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over windows of same-length curves (low/high: min and max between windows).

    >>> m, lo, hi = window_band([np.array([1.0, 2.0]), np.array([3.0, 2.0])])
    >>> m.tolist(), lo.tolist(), hi.tolist()
    ([2.0, 2.0], [1.0, 2.0], [3.0, 2.0])
    """
    arr = np.stack([np.asarray(c, dtype=np.float64) for c in curves])  # (W, X)
    filled_lo = np.where(np.isnan(arr), np.inf, arr).min(0)
    filled_hi = np.where(np.isnan(arr), -np.inf, arr).max(0)
    lo = np.where(np.isfinite(filled_lo), filled_lo, np.nan)
    hi = np.where(np.isfinite(filled_hi), filled_hi, np.nan)
    return nanmean(arr, 0), lo, hi


def add_band(fig: object, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str) -> None:
    """A light filled band between lo and hi (no legend entry; `palette.BAND_OPACITY`)."""
    import plotly.graph_objects as go

    band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False}
    fig.add_trace(go.Scatter(x=x, y=lo, **band))
    fig.add_trace(go.Scatter(x=x, y=hi, fill="tonexty", fillcolor=rgba(color, BAND_OPACITY), **band))
