"""Figures of `PositionSubspaceResult`, light enough for an HTML report.

1. distance of each state from the baseline's in-range bulk, against position (mean over
   windows of the median over layers; band: range between windows);
2. PCA view (window 0): fitted on the bulk, first tokens projected; axes clipped to the bulk's
   range, points beyond it drawn on the edge as crosses (their true coordinates in the hover);
3. probe R² per hidden layer: median over held-out windows, error bars min..max;
4. off-manifold excess (ratio - 1) per label with its 95% interval and the verdict margin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lminf_diag.analyze.base import downsample_index, label_colors, line_figure, mark_train_len
from lminf_diag.analyze.forest import add_band, forest_figure, window_band
from lminf_diag.analyze.probe import median_range

if TYPE_CHECKING:
    from lminf_diag.analyze.positions import PositionSubspaceResult

MAX_SCATTER_LAYERS = 3
PROFILE_POINTS = 400


def _median_profile(layers) -> np.ndarray | None:
    profs = [ly.distance_profile for ly in layers if np.size(ly.distance_profile)]
    if not profs or len({p.size for p in profs}) != 1:
        return None
    arr = np.stack(profs)  # (K, M)
    ok = np.isfinite(arr)
    out = np.full(arr.shape[1], np.nan)
    cols = ok.any(0)
    out[cols] = np.nanmedian(np.where(ok, arr, np.nan)[:, cols], axis=0)
    return out


def distance_figure(r: PositionSubspaceResult) -> go.Figure:
    colors = label_colors(r.labels)
    fig = line_figure(
        f"Distance of each hidden state from {r.reference}'s in-range bulk (median over layers)",
        "position + 1 (tokens, log scale)",
        "distance from the reference centroid (its RMS spreads)",
        log_x=True,
    )
    for lab, s in r.per_label.items():
        curves = [c for c in (_median_profile(w) for w in s.windows) if c is not None]
        curves = [c for c in curves if c.size == s.positions.size]
        if not curves:
            continue
        mean, lo, hi = window_band(curves)
        keep = np.nonzero(np.isfinite(mean))[0]
        keep = keep[downsample_index(keep.size, PROFILE_POINTS, log=True)]
        x = s.positions[keep] + 1
        if len(curves) > 1:
            add_band(fig, x, lo[keep], hi[keep], colors[lab])
        fig.add_trace(go.Scatter(x=x, y=mean[keep], name=lab, line={"color": colors[lab]}))
    mark_train_len(fig, r.train_len, log_x=True)
    return fig


def scatter_figure(r: PositionSubspaceResult) -> go.Figure:
    """One row per shown layer (<= 3), one column per label; colour = log10(position + 1)."""
    labs = [lab for lab, s in r.per_label.items() if any(ly.coords.size for ly in s.layers)]
    shown = sorted({ly.hidden_layer for lab in labs for ly in r.per_label[lab].layers})
    if len(shown) > MAX_SCATTER_LAYERS:
        shown = [shown[0], shown[len(shown) // 2], shown[-1]]
    titles = [f"{lab}, hidden layer {k}" for k in shown for lab in labs]
    fig = make_subplots(rows=max(len(shown), 1), cols=max(len(labs), 1), subplot_titles=titles)
    cmax = max(
        (float(np.log10(s.positions.max() + 1)) for s in r.per_label.values() if s.positions.size), default=1
    )
    ticks = list(range(int(np.floor(cmax)) + 1))
    first = True
    for i, k in enumerate(shown):
        for j, lab in enumerate(labs):
            ly = next((ly for ly in r.per_label[lab].layers if ly.hidden_layer == k), None)
            if ly is None or not ly.coords.size:
                continue
            rng = ly.coord_range  # (2, 2)
            xy = np.clip(ly.coords, rng[:, 0], rng[:, 1]) if np.isfinite(rng).all() else ly.coords
            off = np.any(xy != ly.coords, axis=1)
            hover = [
                f"position {p}" + (f" (off scale: PC1 {c[0]:.3g}, PC2 {c[1]:.3g})" if o else "")
                for p, c, o in zip(ly.coord_positions, ly.coords, off, strict=True)
            ]
            marker = {
                "size": np.where(off, 9, 4).tolist(),
                "symbol": np.where(off, "x", "circle").tolist(),
                "color": np.log10(ly.coord_positions + 1.0),
                "colorscale": "Viridis",
                "cmin": 0,
                "cmax": cmax,
                "showscale": first,
                "colorbar": {
                    "title": "position",
                    "tickvals": ticks,
                    "ticktext": [f"{10**v - 1:g}" for v in ticks],
                },
            }
            fig.add_trace(
                go.Scatter(
                    x=xy[:, 0], y=xy[:, 1], mode="markers", marker=marker, showlegend=False, text=hover
                ),
                row=i + 1,
                col=j + 1,
            )
            first = False
            fig.update_xaxes(title_text="PC1", row=i + 1, col=j + 1)
            fig.update_yaxes(title_text="PC2", row=i + 1, col=j + 1)
            if np.isfinite(rng).all():
                fig.update_xaxes(range=rng[0].tolist(), row=i + 1, col=j + 1)
                fig.update_yaxes(range=rng[1].tolist(), row=i + 1, col=j + 1)
    fig.update_layout(
        title="Hidden states (window 0), PCA fitted on the bulk; first tokens projected, crosses = off scale",
        template="plotly_white",
        height=320 * max(len(shown), 1) + 80,
    )
    return fig


def probe_figure(r: PositionSubspaceResult) -> go.Figure:
    colors = label_colors(r.labels)
    fig = line_figure(
        "Position probe on unseen windows (in-range bulk): median over held-out windows, bars min..max",
        "hidden layer (0 = embeddings)",
        "held-out R² of ln(position + 1)",
    )
    for lab, s in r.per_label.items():
        ks = s.layer_ids
        stats = [median_range(s.values("probe_r2", k)) for k in ks]
        med = [m for m, _, _ in stats]
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=med,
                name=lab,
                mode="lines+markers",
                line={"color": colors[lab]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [hi - m if np.isfinite(hi) else 0.0 for m, _, hi in stats],
                    "arrayminus": [m - lo if np.isfinite(lo) else 0.0 for m, lo, _ in stats],
                },
            )
        )
    fig.add_hline(y=0, line={"dash": "dash", "color": "gray", "width": 1})
    return fig


def position_figures(r: PositionSubspaceResult) -> list[go.Figure]:
    """[distance profile, PCA view, probe R² per layer, off-manifold forest]."""
    from lminf_diag.analyze.positions import MARGIN_OFF, OFF_NET

    est = [e for e in r.key_figures() if e.figure == OFF_NET]
    forest = forest_figure(
        est,
        "States past T: distance to the nearest in-range baseline state over that of unseen in-range "
        "states, minus 1 (95% interval between windows)",
        "off-manifold ratio - 1",
        margin=MARGIN_OFF,
    )
    return [distance_figure(r), scatter_figure(r), probe_figure(r), forest]
