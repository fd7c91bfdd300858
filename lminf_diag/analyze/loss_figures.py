"""The figures of a `LossResult`: binned loss to the end of the window, and "fluent until" per window.

Example:
    >>> import numpy as np
    >>> from lminf_diag.analyze.loss import LossResult
    >>> r = LossResult(train_len=64, nll={"baseline": np.full((2, 256), 2.0)})
    >>> len(bin_figure(r).data), fluency_figure(r).data[0].name
    (3, 'baseline (≥, censored)')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from lminf_diag.analyze.base import label_colors, line_figure, mark_train_len
from lminf_diag.analyze.forest import add_band, window_band
from lminf_diag.analyze.loss import is_control, is_reference

if TYPE_CHECKING:
    from lminf_diag.analyze.loss import LossResult


def bin_figure(self: LossResult) -> go.Figure:
    """Mean loss per log bin over windows (band: min..max between windows), to the end of the window."""
    colors = label_colors(self.labels)
    fig = line_figure(
        f"Loss per log-spaced bin, to the end ({self.n_windows} window(s))",
        "position (tokens, log scale)",
        "mean NLL (nats)",
        log_x=True,
    )
    x = self.edges[:-1]
    bands = {lab: window_band([w.bins for w in self.windows(lab)]) for lab in self.labels}
    for lab in self.labels if self.n_windows > 1 else []:  # every band first: under every line
        add_band(fig, x, bands[lab][1], bands[lab][2], colors[lab])
    for lab in self.labels:
        mean = bands[lab][0]
        dash = "dot" if is_reference(lab) else ("dash" if is_control(lab) else None)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                name=lab,
                mode="lines+markers",
                line={"color": colors[lab], "dash": dash},
                marker={"size": 4},
            )
        )
    return mark_train_len(fig, self.train_len, log_x=True)


def fluency_figure(self: LossResult) -> go.Figure:
    """ "Fluent until" per window and label; open triangles are censored (≥)."""
    colors = label_colors(self.labels)
    fig = line_figure(
        f"Fluent until: first sustained crossing of (1 + {self.tolerance:g}) x in-range loss",
        "position (tokens, log scale)",
        "",
        log_x=True,
    )
    for lab in self.run_labels():
        ws = self.windows(lab)
        for cens in (False, True):
            pts = [
                (w.fluency.value, self.window_names[i])
                for i, w in enumerate(ws)
                if w.fluency.censored == cens and math.isfinite(w.fluency.value)
            ]
            if pts:
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in pts],
                        y=[lab] * len(pts),
                        text=[p[1] for p in pts],
                        mode="markers",
                        name=f"{lab} (≥, censored)" if cens else lab,
                        marker={
                            "color": colors[lab],
                            "size": 9,
                            "symbol": "triangle-right-open" if cens else "circle",
                        },
                        hovertemplate="%{text}: %{x}<extra></extra>",
                    )
                )
    return mark_train_len(fig, self.train_len, log_x=True)


__all__ = ["bin_figure", "fluency_figure"]
