"""Figures of a passkey run: accuracy vs needle distance, inside / outside the Λ, vs length, and
heat maps (length x depth) for fixed depths.

Every accuracy carries its Wilson 95% interval as an error bar. In the heat maps, lengths are
evenly spaced columns (they are usually powers of two); the training length is a dashed line
between the last column within it and the first one beyond it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lminf_diag.analyze.base import axis_ref, label_colors, line_figure, mark_train_len
from lminf_diag.analyze.estimate import wilson

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
        title=f"{result.title}: accuracy per length and depth ({result.trials} prompt(s) per length)",
        coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": "accuracy"}},
        template="plotly_white",
        margin={"t": 90},
    )
    _mark_boundary(fig, train_len_boundary(result.lengths, result.train_len), result.train_len, len(modes))
    return fig


def _bars(counts: list[tuple[int, int]]) -> tuple[list[float], dict]:
    """(accuracies, plotly error_y of the Wilson intervals) of (correct, prompts) pairs (NaN when n = 0)."""
    ps, lo, hi = zip(*[wilson(k, n) for k, n in counts], strict=True) if counts else ((), (), ())
    ps, lo, hi = np.asarray(ps, float), np.asarray(lo, float), np.asarray(hi, float)
    err = {"type": "data", "symmetric": False, "array": (hi - ps).tolist(), "arrayminus": (ps - lo).tolist()}
    return ps.tolist(), err


def accuracy_lines(result: Any) -> go.Figure:
    """Accuracy vs context length, one line per label, with Wilson 95% error bars."""
    fig = line_figure(
        f"{result.title}: accuracy vs length (Wilson 95% intervals)", X_TITLE, "accuracy", log_x=True
    )
    colors = label_colors(list(result.labels))
    for mode in result.labels:
        counts = result.counts_by_length(mode)
        y, err = _bars(counts)
        fig.add_trace(
            go.Scatter(
                x=list(result.lengths),
                y=y,
                error_y=err,
                name=mode,
                mode="lines+markers",
                line={"color": colors[mode]},
                customdata=[f"{k}/{n}" for k, n in counts],
                hovertemplate=f"{mode}<br>length %{{x}}<br>accuracy %{{y:.2f}} (%{{customdata}})<extra></extra>",
            )
        )
    fig.update_yaxes(range=[-0.05, 1.05])
    fig.update_xaxes(tickvals=list(result.lengths), ticktext=[str(n) for n in result.lengths])
    return mark_train_len(fig, result.train_len, log_x=True)


def distance_edges(max_distance: int, n_local: int | None, max_bins: int = 24) -> np.ndarray:
    """Bin edges over [0, max_distance] with n_local as an edge (no bin mixes inside and outside the
    window): width n_local / 4, n_local / 2 or n_local, the first giving <= max_bins bins; past that,
    [0, n_local] then bins of a whole multiple of n_local.

    >>> distance_edges(2000, 1024).tolist()
    [0, 256, 512, 768, 1024, 1280, 1536, 1792, 2048]
    >>> distance_edges(9000, 1024, max_bins=4).tolist()
    [0, 1024, 4096, 7168, 10240]
    >>> distance_edges(100, None, max_bins=4).tolist()
    [0, 25, 50, 75, 100]
    """
    top = max(int(max_distance), 1)
    if not n_local:
        width = max(1, int(np.ceil(top / max_bins)))
        return np.arange(0, int(np.ceil(top / width)) * width + 1, width)
    width = next((n_local // d for d in (4, 2, 1) if n_local // d and top / (n_local // d) <= max_bins), 0)
    if width:
        return np.arange(0, int(np.ceil(top / width)) * width + 1, width)
    width = n_local * int(np.ceil((top - n_local) / ((max_bins - 1) * n_local)))
    beyond = np.arange(n_local, n_local + int(np.ceil((top - n_local) / width)) * width + 1, width)
    return np.concatenate([[0], beyond])


def distance_figure(result: Any) -> go.Figure:
    """Accuracy vs needle distance (tokens from the needle to the end of the prompt), binned, one line
    per label with Wilson 95% error bars; a vertical line at n_local (the window of the answering row)."""
    fig = line_figure(
        f"{result.title}: accuracy vs needle distance (Wilson 95% intervals)",
        "needle distance: tokens from the needle to the end of the prompt",
        "accuracy",
    )
    frame = result.to_frame()
    frame = frame[frame["distance"].notna()] if not frame.empty else frame
    if frame.empty:
        return fig
    edges = distance_edges(int(frame["distance"].max()), result.n_local)
    centre = (edges[:-1] + edges[1:]) / 2
    colors = label_colors(list(result.labels))
    for mode in result.labels:
        f = frame[frame["mode"] == mode]
        which = np.clip(
            np.searchsorted(edges, f["distance"].to_numpy(float), side="left") - 1, 0, len(centre) - 1
        )
        counts = [
            (int(f["correct"].to_numpy(bool)[which == b].sum()), int((which == b).sum()))
            for b in range(len(centre))
        ]
        keep = [b for b, (_, n) in enumerate(counts) if n]
        y, err = _bars([counts[b] for b in keep])
        fig.add_trace(
            go.Scatter(
                x=centre[keep].tolist(),
                y=y,
                error_y=err,
                name=mode,
                mode="lines+markers",
                line={"color": colors[mode]},
                customdata=[
                    f"{counts[b][0]}/{counts[b][1]}, distance {edges[b]}-{edges[b + 1]}" for b in keep
                ],
                hovertemplate=f"{mode}<br>accuracy %{{y:.2f}} (%{{customdata}})<extra></extra>",
            )
        )
    fig.update_yaxes(range=[-0.05, 1.05])
    if result.n_local:
        fig.add_vline(
            x=result.n_local,
            line={"dash": "dot", "color": "black", "width": 1.5},
            annotation_text=f"n_local = {result.n_local} (window)",
            annotation_position="top left",
        )
    return fig


def lambda_figure(result: Any) -> go.Figure | None:
    """Per patched label, over the prompts longer than n_local: accuracy with the needle inside and
    outside its Λ, next to the share of needles inside it (the geometric expectation); Wilson bars.
    None when no patched label has such prompts."""
    labels = [lab for lab in result.labels if lab != "baseline" and result.flags(lab)]
    if not labels:
        return None
    fig = line_figure(
        f"{result.title}: accuracy by the needle's place in the Λ (prompts longer than n_local = {result.n_local})",
        "run",
        "fraction of prompts",
    )
    parts = [
        # shades of one sequential scale: these bars are categories, not run labels (x holds the runs)
        ("inside", "accuracy, needle inside Λ", "#08519c"),
        ("outside", "accuracy, needle outside Λ", "#6baed6"),
        ("share_inside", "needles inside Λ (geometric expectation)", "#c6dbef"),
    ]
    for key, name, color in parts:
        counts = [result.conditional(lab)[key] for lab in labels]
        y, err = _bars(counts)
        fig.add_trace(
            go.Bar(
                x=labels,
                y=y,
                error_y=err,
                name=name,
                marker_color=color,
                customdata=[f"{k}/{n}" for k, n in counts],
                hovertemplate=f"{name}<br>%{{x}}: %{{y:.2f}} (%{{customdata}})<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.05])
    return fig


def passkey_figures(result: Any) -> list[go.Figure]:
    """[accuracy vs needle distance, inside / outside the Λ (when any prompt is longer than n_local),
    accuracy vs length, heat maps (fixed depths only)] for a PasskeyResult."""
    figs = [distance_figure(result), lambda_figure(result), accuracy_lines(result)]
    if not result.random_depths:
        figs.append(heatmaps(result))
    return [f for f in figs if f is not None]


__all__ = [
    "accuracy_lines",
    "distance_edges",
    "distance_figure",
    "heatmaps",
    "lambda_figure",
    "passkey_figures",
    "train_len_boundary",
]
