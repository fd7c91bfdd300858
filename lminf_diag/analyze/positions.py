"""Factor 3 of LM-Infinite: hidden states carry implicit absolute position, mostly in the first tokens.

For each captured hidden layer (`hidden` (K, M, D) at `hidden_positions` (M,)):
- PCA of the hidden states, plotted coloured by position, and its explained variance ratios;
- `first_token_distance`: mean distance of the first `first_tokens` positions from the centroid of
  the others, in units of the others' RMS spread sqrt(mean ||x - centroid||^2) (a typical bulk
  point sits near 1);
- a linear probe (standardize + ridge, alpha by GCV) predicting ln(position + 1), scored by 5-fold
  shuffled cross-validated R² (seed 0), on at most 1000 evenly spaced stored positions;
- principal angles (degrees) between the top-`n_components` PCA subspaces of a window within the
  training length and one beyond it (NaN when there are no positions beyond).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from threadpoolctl import threadpool_limits

from lminf_diag.analyze.base import (
    AnalysisResult,
    as_float,
    downsample_index,
    label_colors,
    line_figure,
    mark_train_len,
    nanmean,
)
from lminf_diag.analyze.hidden_stats import LayerSubspace, layer_subspace
from lminf_diag.capture.comparison import as_traces, common_train_len
from lminf_diag.capture.trace import Trace
from lminf_diag.errors import InvalidArgumentError

MAX_SCATTER_LAYERS = 3


@dataclass
class PositionStats:
    """One label: positions (M,) of the hidden states and the analysed layers."""

    label: str
    positions: np.ndarray  # (M,)
    layers: list[LayerSubspace]

    def mean(self, name: str) -> float:
        """Mean over layers of a LayerSubspace field (arrays averaged first), NaN ignored."""
        vals = [as_float(np.mean(getattr(ly, name))) for ly in self.layers if np.size(getattr(ly, name))]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")


@dataclass
class PositionSubspaceResult(AnalysisResult):
    """Result of `position_subspaces`; `per_label` maps label -> PositionStats."""

    per_label: dict[str, PositionStats] = field(default_factory=dict)
    title: str = "Implicit absolute position in hidden states"
    description: str = (
        "How far each token's hidden state sits from the bulk of the others (in units of their spread), "
        "a PCA view coloured by position, and how well a linear probe reads the position off the hidden "
        "state. The first tokens standing far apart, and a high probe R², mean the model keeps absolute "
        "position in its hidden states even without position embeddings."
    )

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> probe_r2 (mean), probe_r2_layer<k>, first_token_distance, pc1_var, principal_angle_mean.

        Every label gets the same keys: probe_r2_layer<k> for every layer any label has (NaN if absent).
        """
        out: dict[str, dict[str, float]] = {}
        all_layers = sorted({ly.hidden_layer for s in self.per_label.values() for ly in s.layers})
        for lab, s in self.per_label.items():
            d = {
                "probe_r2": s.mean("probe_r2"),
                "first_token_distance": s.mean("first_token_distance"),
                "pc1_var": float(np.mean([ly.explained_variance[0] for ly in s.layers]))
                if s.layers
                else float("nan"),
                "principal_angle_mean": s.mean("principal_angles"),
            }
            r2 = {ly.hidden_layer: float(ly.probe_r2) for ly in s.layers}
            d.update({f"probe_r2_layer{k}": r2.get(k, float("nan")) for k in all_layers})
            out[lab] = d
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per (label, hidden layer): probe_r2, first_token_distance, pc<i>_var, angle_mean."""
        rows = []
        for lab, s in self.per_label.items():
            for ly in s.layers:
                row = {"label": lab, "hidden_layer": ly.hidden_layer, "probe_r2": ly.probe_r2}
                row["first_token_distance"] = ly.first_token_distance
                row.update({f"pc{i + 1}_var": float(v) for i, v in enumerate(ly.explained_variance)})
                row["principal_angle_mean"] = (
                    as_float(np.mean(ly.principal_angles)) if ly.principal_angles.size else np.nan
                )
                rows.append(row)
        return pd.DataFrame(rows)

    def figures(self) -> list[go.Figure]:
        """Distance from the bulk vs position; PCA scatter (layers x labels); probe R² per layer."""
        colors = label_colors(self.labels)
        dist = line_figure(
            "Distance of each token's hidden state from the bulk",
            "position + 1 (tokens, log scale)",
            "distance from bulk centroid (bulk RMS units)",
            log_x=True,
        )
        for lab, s in self.per_label.items():
            if not s.layers:
                continue
            prof = nanmean(np.stack([ly.distance_profile for ly in s.layers]), axis=0)  # (M,)
            idx = downsample_index(prof.size, log=True)
            dist.add_trace(
                go.Scatter(
                    x=s.positions[idx] + 1,
                    y=prof[idx],
                    name=f"{lab} (mean over layers)",
                    line={"color": colors[lab]},
                )
            )
        mark_train_len(dist, self.train_len, log_x=True)
        probe = line_figure(
            "Linear probe for position",
            "hidden layer (0 = embeddings)",
            "cross-validated R² of ln(position + 1)",
        )
        for lab, s in self.per_label.items():
            x = [ly.hidden_layer for ly in s.layers]
            y = [ly.probe_r2 for ly in s.layers]
            probe.add_trace(go.Scatter(x=x, y=y, name=lab, mode="lines+markers", line={"color": colors[lab]}))
        return [dist, self._scatter(), probe]

    def _scatter(self) -> go.Figure:
        """PCA scatter: one row per shown layer (<= 3), one column per label, colour = log10(position + 1)."""
        labs = [lab for lab, s in self.per_label.items() if s.layers]
        shown = sorted({ly.hidden_layer for lab in labs for ly in self.per_label[lab].layers})
        if len(shown) > MAX_SCATTER_LAYERS:
            shown = [shown[0], shown[len(shown) // 2], shown[-1]]
        titles = [f"{lab}, hidden layer {k}" for k in shown for lab in labs]
        fig = make_subplots(rows=max(len(shown), 1), cols=max(len(labs), 1), subplot_titles=titles)
        cmax = max(
            (float(np.log10(s.positions.max() + 1)) for s in self.per_label.values() if s.positions.size),
            default=1,
        )
        ticks = [v for v in range(int(np.floor(cmax)) + 1)]
        first = True
        for r, k in enumerate(shown):
            for c, lab in enumerate(labs):
                ly = next((ly for ly in self.per_label[lab].layers if ly.hidden_layer == k), None)
                if ly is None:
                    continue
                marker = {
                    "size": 4,
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
                        x=ly.coords[:, 0],
                        y=ly.coords[:, 1],
                        mode="markers",
                        marker=marker,
                        showlegend=False,
                        text=[f"position {p}" for p in ly.coord_positions],
                    ),
                    row=r + 1,
                    col=c + 1,
                )
                first = False
                fig.update_xaxes(title_text="PC1", row=r + 1, col=c + 1)
                fig.update_yaxes(title_text="PC2", row=r + 1, col=c + 1)
        fig.update_layout(
            title="Hidden states, first two principal components, coloured by position",
            template="plotly_white",
            height=320 * max(len(shown), 1) + 80,
        )
        return fig


def _position_stats(label: str, trace: Trace, layers: list[int] | None, args: dict) -> PositionStats:
    avail = [int(k) for k in np.asarray(trace.hidden_layers)]
    pos_all = np.asarray(trace.hidden_positions, dtype=np.int64)
    wanted = avail if layers is None else [k for k in layers if k in avail]
    out = []
    for k in wanted:
        x = np.asarray(trace.hidden[avail.index(k)], dtype=np.float32)  # (M, D)
        ok = np.isfinite(x).all(axis=1)
        if ok.sum() >= 2:
            ly = layer_subspace(x[ok], pos_all[ok], k, args)
            full = np.full(pos_all.size, np.nan)  # (M,): NaN where a state was not finite
            full[ok] = ly.distance_profile
            ly.distance_profile = full
            out.append(ly)
    return PositionStats(label=label, positions=pos_all, layers=out)


def position_subspaces(
    trace_or_cmp,
    *,
    layers: list[int] | None = None,
    n_components: int = 2,
    first_tokens: int = 4,
    window: int | None = None,
    train_len: int | None = None,
) -> PositionSubspaceResult:
    """PCA, first-token distance, position probe and principal angles per hidden layer.

    layers: hidden-layer indices (values of `trace.hidden_layers`), default all. window: tokens
    per window for principal angles; None compares positions [first_tokens, train_len) with all
    positions >= train_len, w compares [train_len - w, train_len) with the last w positions.

    >>> from tests.synthetic import make_trace
    >>> r = position_subspaces(make_trace(n=256, train_len=64))
    >>> r.summary()["baseline"]["probe_r2"] > 0.9
    True
    """
    if n_components < 1 or first_tokens < 0 or (window is not None and window < 2):
        raise InvalidArgumentError("need n_components >= 1, first_tokens >= 0 and window >= 2 (or None)")
    traces = as_traces(trace_or_cmp)
    if not any(np.asarray(t.hidden).size for t in traces.values()):
        raise InvalidArgumentError("no trace holds hidden states; capture hidden layers to analyze positions")
    if layers is not None:
        known = {int(k) for t in traces.values() for k in np.asarray(t.hidden_layers)}
        if not set(layers) & known:
            raise InvalidArgumentError(f"layers={layers}; captured hidden layers are {sorted(known)}")
    tl = common_train_len(traces, train_len)
    args = {"n_components": n_components, "first_tokens": first_tokens, "window": window, "train_len": tl}
    # One BLAS thread: these (m, m) eigh/SVD calls are small, and OpenBLAS threads on a busy
    # machine made them 10-40x slower in measurements; single-threaded they are fast everywhere.
    with threadpool_limits(limits=1, user_api="blas"):
        per_label = {lab: _position_stats(lab, t, layers, args) for lab, t in traces.items()}
    return PositionSubspaceResult(labels=list(traces), train_len=tl, per_label=per_label)
