"""Factor 2 of LM-Infinite: attention entropy keeps growing like ln n past the training length.

Convention: the x variable is n = query position + 1 = the number of keys a full causal row
attends to. Uniform attention over those n keys (0-based query position n - 1) has entropy
exactly ln n, so fitting entropy = a + b ln n to it gives slope b = 1; `uniform ceiling` lines
plot ln n. "within" fits use 1 <= n <= train_len (query positions < train_len), "beyond" fits
use n > train_len.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lminf_diag.analyze.base import (
    AnalysisResult,
    as_float,
    downsample_index,
    label_colors,
    line_figure,
    mark_train_len,
    nanmean,
)
from lminf_diag.analyze.fit import LogFit, fit_log, fit_log_many
from lminf_diag.capture.comparison import as_traces, common_train_len
from lminf_diag.capture.trace import Trace


@dataclass
class EntropyStats:
    """One label: mean entropy curve, within/beyond fits, per-layer and per-head slopes."""

    label: str
    n: np.ndarray  # (N,) attended keys = query position + 1
    mean_entropy: np.ndarray  # (N,) nats, mean over layers and heads
    within: LogFit
    beyond: LogFit
    layers: np.ndarray  # (L,) model layer indices
    heads: np.ndarray  # (H,) head indices
    layer_slopes: np.ndarray  # (L,) slope of the head-mean curve, in `slope_range`
    head_slopes: np.ndarray | None  # (L, H) or None when per_head=False
    slope_range: str  # "beyond" or "within"
    mean_entropy_within: float = float("nan")
    mean_entropy_beyond: float = float("nan")


@dataclass
class EntropyGrowthResult(AnalysisResult):
    """Result of `entropy_growth`; `per_label` maps label -> EntropyStats."""

    per_label: dict[str, EntropyStats] = field(default_factory=dict)
    title: str = "Attention entropy grows with the number of tokens attended"
    description: str = (
        "Mean attention entropy over all captured layers and heads against the number of tokens "
        "each query attends to (log scale); the dotted black line is the entropy of uniform "
        "attention, ln n. A line that keeps rising past the training length means attention "
        "spreads thinner than anything seen in training; a patched model should level off."
    )

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> slope_within, slope_beyond (+ CIs), r2_within, r2_beyond, mean entropies."""
        out = {}
        for lab, s in self.per_label.items():
            out[lab] = {
                "slope_within": s.within.slope,
                "slope_within_ci_low": s.within.ci_low,
                "slope_within_ci_high": s.within.ci_high,
                "r2_within": s.within.r2,
                "slope_beyond": s.beyond.slope,
                "slope_beyond_ci_low": s.beyond.ci_low,
                "slope_beyond_ci_high": s.beyond.ci_high,
                "r2_beyond": s.beyond.r2,
                "mean_entropy_within": s.mean_entropy_within,
                "mean_entropy_beyond": s.mean_entropy_beyond,
            }
        return {lab: {k: float(v) for k, v in d.items()} for lab, d in out.items()}

    def to_frame(self) -> pd.DataFrame:
        """Columns label, position, n, entropy (mean over layers and heads), uniform_ceiling."""
        frames = [
            pd.DataFrame(
                {
                    "label": lab,
                    "position": s.n - 1,
                    "n": s.n,
                    "entropy": s.mean_entropy,
                    "uniform_ceiling": np.log(s.n),
                }
            )
            for lab, s in self.per_label.items()
        ]
        return pd.concat(frames, ignore_index=True)

    def fits_frame(self) -> pd.DataFrame:
        """One row per (label, range): slope, ci_low, ci_high, intercept, r2, n_points."""
        rows = [
            {"label": lab, "range": name, **vars(getattr(s, name))}
            for lab, s in self.per_label.items()
            for name in ("within", "beyond")
        ]
        return pd.DataFrame(rows)

    def figures(self) -> list[go.Figure]:
        """Entropy vs n with fits and ln n; per-layer slopes; per-head slope heat maps."""
        colors = label_colors(self.labels)
        fig = line_figure(
            self.title, "tokens attended n = position + 1 (log scale)", "entropy (nats)", log_x=True
        )
        longest = max(self.per_label.values(), key=lambda s: s.n.size)
        idx = downsample_index(longest.n.size, log=True)
        fig.add_trace(
            go.Scatter(
                x=longest.n[idx],
                y=np.log(longest.n[idx]),
                name="uniform attention, ln n",
                line={"color": "black", "dash": "dot", "width": 1},
            )
        )
        for lab, s in self.per_label.items():
            idx = downsample_index(s.n.size, log=True)
            fig.add_trace(
                go.Scatter(x=s.n[idx], y=s.mean_entropy[idx], name=lab, line={"color": colors[lab]})
            )
            within = _within_mask(s.n, self.train_len)
            for name, fit, mask in (("within", s.within, within), ("beyond", s.beyond, ~within)):
                if not np.isfinite(fit.slope) or not mask.any():
                    continue
                xs = np.array([s.n[mask].min(), s.n[mask].max()], dtype=np.float64)
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=fit.intercept + fit.slope * np.log(xs),
                        mode="lines",
                        name=f"{lab} fit {name}: slope {fit.slope:.3f}",
                        line={"color": colors[lab], "dash": "dash", "width": 1},
                    )
                )
        mark_train_len(fig, self.train_len, log_x=True)
        figs = [fig]
        rng = next(iter(self.per_label.values())).slope_range
        lay = line_figure(
            f"Entropy slope per layer ({rng} the training length)", "layer", "slope b (nats per unit of ln n)"
        )
        for lab, s in self.per_label.items():
            lay.add_trace(
                go.Scatter(
                    x=s.layers, y=s.layer_slopes, name=lab, mode="lines+markers", line={"color": colors[lab]}
                )
            )
        figs.append(lay)
        with_heads = {lab: s for lab, s in self.per_label.items() if s.head_slopes is not None}
        if with_heads:
            figs.append(self._heatmap(with_heads, rng))
        return figs

    def _heatmap(self, per_label: dict[str, EntropyStats], rng: str) -> go.Figure:
        """Per-head slopes, one column per label, shared colour scale."""
        vals = np.concatenate([s.head_slopes.ravel() for s in per_label.values()])
        vals = vals[np.isfinite(vals)]
        zmax = float(np.abs(vals).max()) if vals.size else 1.0
        fig = make_subplots(rows=1, cols=len(per_label), subplot_titles=list(per_label), shared_yaxes=True)
        for i, (_lab, s) in enumerate(per_label.items()):
            fig.add_trace(
                go.Heatmap(
                    z=s.head_slopes,
                    x=s.heads,
                    y=s.layers,
                    zmin=-zmax,
                    zmax=zmax,
                    zmid=0,
                    colorscale="RdBu_r",
                    showscale=i == 0,
                    colorbar={"title": "slope b"},
                ),
                row=1,
                col=i + 1,
            )
            fig.update_xaxes(title_text="head", row=1, col=i + 1)
        fig.update_yaxes(title_text="layer", row=1, col=1)
        fig.update_layout(
            title=f"Entropy slope per head ({rng} the training length)", template="plotly_white"
        )
        return fig


def _within_mask(n: np.ndarray, train_len: int | None) -> np.ndarray:
    """(N,) True where n <= train_len (everything when train_len is unknown)."""
    return n <= train_len if train_len is not None else np.ones(n.shape, bool)


def _entropy_stats(label: str, trace: Trace, train_len: int | None, per_head: bool) -> EntropyStats:
    """Layer by layer, so that no (L, H, N) float64 copy is ever made."""
    n = np.asarray(trace.positions, dtype=np.int64) + 1  # (N,)
    within = _within_mask(n, train_len)
    beyond = ~within
    use_beyond = int(beyond.sum()) >= 2
    sel = beyond if use_beyond else within
    n_layers = trace.entropy.shape[0]
    total, count = np.zeros(n.size), np.zeros(n.size)  # (N,) sums over layers and heads
    layer_slopes = np.full(n_layers, np.nan)  # (L,)
    head_slopes = np.full(trace.entropy.shape[:2], np.nan) if per_head else None  # (L, H)
    for li in range(n_layers):
        ent = np.asarray(trace.entropy[li], dtype=np.float64)  # (H, N)
        finite = np.isfinite(ent)
        total += np.where(finite, ent, 0.0).sum(0)
        count += finite.sum(0)
        layer_slopes[li] = fit_log_many(n[sel], nanmean(ent[:, sel], axis=0)[None])["slope"][0]
        if head_slopes is not None:
            head_slopes[li] = fit_log_many(n[sel], ent[:, sel])["slope"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)  # (N,)
    return EntropyStats(
        label=label,
        n=n,
        mean_entropy=mean,
        within=fit_log(n[within], mean[within]),
        beyond=fit_log(n[beyond], mean[beyond]),
        layers=np.asarray(trace.layers),
        heads=np.asarray(trace.heads),
        layer_slopes=layer_slopes,
        head_slopes=head_slopes,
        slope_range="beyond" if use_beyond else "within",
        mean_entropy_within=as_float(nanmean(mean[within])),
        mean_entropy_beyond=as_float(nanmean(mean[beyond])),
    )


def entropy_growth(
    trace_or_cmp, *, train_len: int | None = None, per_head: bool = True
) -> EntropyGrowthResult:
    """Fit entropy = a + b ln n within and beyond the training length, for each trace.

    train_len defaults to the traces' meta; without it everything counts as "within".

    >>> from tests.synthetic import make_trace
    >>> r = entropy_growth(make_trace(n=256, train_len=64))
    >>> round(r.summary()["baseline"]["slope_within"], 6)
    1.0
    """
    traces = as_traces(trace_or_cmp)
    tl = common_train_len(traces, train_len)
    per_label = {lab: _entropy_stats(lab, t, tl, per_head) for lab, t in traces.items()}
    return EntropyGrowthResult(labels=list(traces), train_len=tl, per_label=per_label)
