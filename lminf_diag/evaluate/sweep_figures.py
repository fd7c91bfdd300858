"""Figures of the sweep: heat maps over (n_global, n_local) and retrieval accuracy against distance.

Heat maps use a sequential colour scale (Viridis); each cell's text shows the estimate and its
95% interval, so the colour never stands alone.

Example:
    >>> fig = reach_figure({"lambda": [(64, 0.9, 0.7, 1.0), (512, 0.1, 0.0, 0.3)]}, n_local=128)
    >>> len(fig.data)
    1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from lminf_diag.analyze.estimate import Estimate


def heatmap(result: Any, figure_of: Callable[[int, int], Estimate], title: str, unit: str, *,
            reverse: bool = False, expected: Callable[[int, int], Estimate] | None = None) -> go.Figure:
    """A heat map of one estimate per cell: x = n_global, y = n_local (categories)."""
    from lminf_diag.evaluate.sweep_result import cell_text

    gs, ns = result.n_globals, result.n_locals
    z, text = [], []
    for n in ns:
        zr, tr = [], []
        for g in gs:
            e = figure_of(g, n)
            zr.append(e.estimate)
            t = cell_text(e)
            if expected is not None:
                t += f"<br>inside Λ {expected(g, n).estimate:.2f}"
            tr.append(t)
        z.append(zr)
        text.append(tr)
    fig = go.Figure(go.Heatmap(
        x=[str(g) for g in gs], y=[str(n) for n in ns], z=z, text=text, texttemplate="%{text}",
        colorscale="Viridis", reversescale=reverse, colorbar={"title": unit},
        hovertemplate="n_global %{x}<br>n_local %{y}<br>%{text}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="n_global (global tokens)", yaxis_title="n_local (window)",
                      xaxis_type="category", yaxis_type="category")
    return fig


def reach_figure(curves: Mapping[str, Sequence[tuple[float, float, float, float]]], n_local: int,
                 title: str = "Passkey retrieval against the needle's distance") -> go.Figure:
    """Lines of accuracy against distance, per run: {label: [(distance, accuracy, low, high), ...]}."""
    from lminf_diag.analyze.base import label_colors

    colors = label_colors(list(curves))
    fig = go.Figure()
    for label, pts in curves.items():
        x = [p[0] for p in pts]
        y = [p[1] for p in pts]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=label, line={"color": colors[label]},
            error_y={"type": "data", "symmetric": False, "array": [p[3] - p[1] for p in pts],
                     "arrayminus": [p[1] - p[2] for p in pts]},
        ))
    fig.add_vline(x=n_local, line_dash="dash", annotation_text=f"n_local = {n_local}")
    fig.update_layout(title=title, xaxis_title="needle distance from the end of the prompt (tokens)",
                      yaxis_title="accuracy (Wilson 95% CI)", xaxis_type="log", yaxis_range=[-0.05, 1.05])
    return fig


__all__ = ["heatmap", "reach_figure"]
