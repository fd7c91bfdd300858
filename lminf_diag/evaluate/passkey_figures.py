"""Figures of a passkey run: accuracy heat maps (length x depth) per mode, and accuracy vs length.

Lengths are shown as evenly spaced columns (they are usually powers of two); the training
length is a dashed line between the last column within it and the first one beyond it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lminf_diag.analyze.base import axis_ref, label_colors, line_figure, mark_train_len

X_TITLE = "context length (tokens)"
Y_TITLE = "needle depth (fraction)"


def train_len_boundary(lengths: list[int], train_len: int | None) -> float | None:
    """Column coordinate of the training length: between the last length <= it and the next.

    >>> train_len_boundary([1024, 2048, 4096], 2048)
    1.5
    >>> train_len_boundary([1024, 2048], 8192) is None
    True
    """
    if train_len is None:
        return None
    within = sum(1 for n in lengths if n <= train_len)
    if within == len(lengths):
        return None if within == 0 else (len(lengths) - 0.5 if lengths[-1] == train_len else None)
    return within - 0.5


def _mark_boundary(fig: go.Figure, x: float | None, train_len: int | None, n_axes: int) -> None:
    if x is None:
        return
    for i in range(n_axes):
        ref = axis_ref(i)
        fig.add_shape(
            type="line",
            xref=f"x{ref}",
            yref=f"y{ref} domain",
            x0=x,
            x1=x,
            y0=0,
            y1=1,
            line={"dash": "dash", "color": "white", "width": 3},
            name="training length",
        )
        fig.add_annotation(
            x=x,
            xref=f"x{ref}",
            yref=f"y{ref} domain",
            y=1.0,
            yanchor="bottom",
            text=f"training length ({train_len})",
            showarrow=False,
            font={"size": 11, "color": "gray"},
        )


def heatmaps(result: Any) -> go.Figure:
    """One accuracy heat map per mode, side by side, shared colour scale 0..1."""
    modes = list(result.labels)
    fig = make_subplots(
        rows=1, cols=max(len(modes), 1), shared_yaxes=True, subplot_titles=modes, horizontal_spacing=0.04
    )
    cols = list(range(len(result.lengths)))
    rows = list(range(len(result.depths)))
    for i, mode in enumerate(modes):
        grid = result.accuracy_grid(mode)  # (D, L)
        fig.add_trace(
            go.Heatmap(
                z=grid,
                x=cols,
                y=rows,
                zmin=0.0,
                zmax=1.0,
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}",
                name=mode,
                hovertemplate=f"{mode}<br>length %{{customdata[0]}}<br>depth %{{customdata[1]}}"
                "<br>accuracy %{z:.2f}<extra></extra>",
                customdata=np.dstack(np.meshgrid(result.lengths, result.depths)),
            ),
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(
            tickvals=cols, ticktext=[str(n) for n in result.lengths], title_text=X_TITLE, row=1, col=i + 1
        )
    fig.update_yaxes(
        tickvals=rows, ticktext=[f"{d:g}" for d in result.depths], title_text=Y_TITLE, row=1, col=1
    )
    fig.update_layout(
        title=f"{result.title}: accuracy per length and depth ({result.trials} trial(s) per cell)",
        coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": "accuracy"}},
        template="plotly_white",
        margin={"t": 90},
    )
    _mark_boundary(fig, train_len_boundary(result.lengths, result.train_len), result.train_len, len(modes))
    return fig


def accuracy_lines(result: Any) -> go.Figure:
    """Accuracy (over depths and trials) vs context length, one line per mode."""
    fig = line_figure(f"{result.title}: accuracy vs length", X_TITLE, "accuracy", log_x=True)
    table = result.accuracy_by_length()
    colors = label_colors(list(result.labels))
    for mode in result.labels:
        fig.add_trace(
            go.Scatter(
                x=list(result.lengths),
                y=table.loc[mode].to_numpy(dtype=float),
                name=mode,
                mode="lines+markers",
                line={"color": colors[mode]},
            )
        )
    fig.update_yaxes(range=[-0.05, 1.05])
    fig.update_xaxes(tickvals=list(result.lengths), ticktext=[str(n) for n in result.lengths])
    return mark_train_len(fig, result.train_len, log_x=True)


def passkey_figures(result: Any) -> list[go.Figure]:
    """[heat maps, accuracy vs length] for a PasskeyResult."""
    return [heatmaps(result), accuracy_lines(result)]


__all__ = ["accuracy_lines", "heatmaps", "passkey_figures", "train_len_boundary"]
