"""Factor 1 of LM-Infinite: attention logits explode at distances never seen in training.

`logit_profile[l, h, r, j]` is the running max of row r's logits over distances <= d_j, so
each row's profile only rises with distance. Its envelope (mean, std and 10-90% quantiles over
layers, heads and rows, NaN ignored) is compared within (d <= train_len) and beyond it.
Logits can be negative, so the key figure is a difference in logit units:

    max_logit_within = max over d <= train_len of the mean envelope
    max_logit_beyond = max over d >  train_len of the mean envelope
    excess           = max_logit_beyond - max_logit_within   (~0 when logits stay in range)
    envelope_ratio   = max_logit_beyond / max_logit_within, only when both are > 0, else NaN
"""

from __future__ import annotations

import warnings
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
    nanmax,
    nanmean,
)
from lminf_diag.capture.comparison import as_traces, common_train_len
from lminf_diag.capture.trace import Trace
from lminf_diag.errors import InvalidArgumentError

N_TOP = 5


@dataclass
class TopHead:
    """A (layer, head) whose mean profile rises most past the training length (logit units)."""

    layer: int
    head: int
    excess: float


@dataclass
class LogitStats:
    """One label's envelope against distance and its row-max logits against position."""

    label: str
    distance: np.ndarray  # (P,) tokens
    mean: np.ndarray  # (P,) mean envelope over layers, heads, rows
    std: np.ndarray  # (P,)
    q10: np.ndarray  # (P,)
    q90: np.ndarray  # (P,)
    n_rows: np.ndarray  # (P,) finite (layer, head, row) values per distance
    head_excess: np.ndarray  # (L, H) per-head excess
    top_heads: list[TopHead]
    position: np.ndarray  # (N,) query positions
    layer_max_logit: np.ndarray  # (L, N) max_logit averaged over heads
    max_logit_within: float = float("nan")
    max_logit_beyond: float = float("nan")
    excess: float = float("nan")
    envelope_ratio: float = float("nan")
    row_max_within: float = float("nan")  # mean of max_logit over layers, heads, positions < train_len
    row_max_beyond: float = float("nan")  # same for positions >= train_len


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


@dataclass
class LogitExplosionResult(AnalysisResult):
    """Result of `logit_explosion`; `per_label` maps label -> LogitStats."""

    per_label: dict[str, LogitStats] = field(default_factory=dict)
    title: str = "Attention logits at unseen distances"
    description: str = (
        "The largest attention logit a query gives to any key up to a given distance, averaged over "
        "layers, heads and sampled rows (band: 10-90% of them). If the line climbs past the training "
        "length, logits are exploding at distances the model never saw; the patched model should stay flat."
    )

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> max_logit_within, max_logit_beyond, excess, envelope_ratio, top_head_excess, row_max_*."""
        out = {}
        for lab, s in self.per_label.items():
            out[lab] = {
                "max_logit_within": s.max_logit_within,
                "max_logit_beyond": s.max_logit_beyond,
                "excess": s.excess,
                "envelope_ratio": s.envelope_ratio,
                "top_head_excess": s.top_heads[0].excess if s.top_heads else float("nan"),
                "row_max_within": s.row_max_within,
                "row_max_beyond": s.row_max_beyond,
            }
        return {lab: {k: float(v) for k, v in d.items()} for lab, d in out.items()}

    def to_frame(self) -> pd.DataFrame:
        """Envelope: columns label, distance, mean, std, q10, q90, n_rows."""
        frames = [
            pd.DataFrame(
                {
                    "label": lab,
                    "distance": s.distance,
                    "mean": s.mean,
                    "std": s.std,
                    "q10": s.q10,
                    "q90": s.q90,
                    "n_rows": s.n_rows,
                }
            )
            for lab, s in self.per_label.items()
        ]
        return pd.concat(frames, ignore_index=True)

    def top_heads_frame(self) -> pd.DataFrame:
        """Columns label, rank, layer, head, excess (top 5 per label, largest excess first)."""
        rows = [
            {"label": lab, "rank": i + 1, "layer": h.layer, "head": h.head, "excess": h.excess}
            for lab, s in self.per_label.items()
            for i, h in enumerate(s.top_heads)
        ]
        return pd.DataFrame(rows, columns=["label", "rank", "layer", "head", "excess"])

    def figures(self) -> list[go.Figure]:
        """Envelope vs distance (log x) and mean row-max logit vs query position."""
        colors = label_colors(self.labels)
        env = line_figure(
            self.title, "distance (tokens, log scale)", "running max logit (logit units)", log_x=True
        )
        for lab, s in self.per_label.items():
            keep = np.nonzero((s.distance > 0) & np.isfinite(s.mean))[0]
            keep = keep[downsample_index(keep.size, log=True)]
            x = s.distance[keep]
            band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False}
            env.add_trace(go.Scatter(x=x, y=s.q10[keep], **band))
            env.add_trace(
                go.Scatter(x=x, y=s.q90[keep], fill="tonexty", fillcolor=_rgba(colors[lab], 0.2), **band)
            )
            env.add_trace(
                go.Scatter(x=x, y=s.mean[keep], name=lab, mode="lines+markers", line={"color": colors[lab]})
            )
        mark_train_len(env, self.train_len, log_x=True)
        pos = line_figure(
            "Largest attention logit per query",
            "query position (tokens)",
            "max logit, mean over heads (logit units)",
        )
        for lab, s in self.per_label.items():
            if s.layer_max_logit.size == 0:
                continue
            idx = downsample_index(s.position.size)
            lm = s.layer_max_logit[:, idx]  # (L, n_points)
            band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False}
            pos.add_trace(go.Scatter(x=s.position[idx], y=-nanmax(-lm, 0), **band))
            pos.add_trace(
                go.Scatter(
                    x=s.position[idx],
                    y=nanmax(lm, 0),
                    fill="tonexty",
                    fillcolor=_rgba(colors[lab], 0.2),
                    **band,
                )
            )
            pos.add_trace(
                go.Scatter(
                    x=s.position[idx],
                    y=nanmean(lm, 0),
                    name=f"{lab} (band: min-max over layers)",
                    line={"color": colors[lab]},
                )
            )
        mark_train_len(pos, self.train_len)
        return [env, pos]


def _quantiles(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """10% and 90% quantiles per column of (rows, P), NaN for all-NaN columns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if flat.shape[0] == 0:
            return np.full(flat.shape[1], np.nan), np.full(flat.shape[1], np.nan)
        q = np.nanquantile(flat, [0.1, 0.9], axis=0)
    return q[0], q[1]


def _logit_stats(label: str, trace: Trace, train_len: int | None) -> LogitStats:
    prof = np.asarray(trace.logit_profile, dtype=np.float64)  # (L, H, R, P)
    n_l, n_h, _, n_p = prof.shape
    dist = np.asarray(trace.profile_dist)  # (P,)
    flat = prof.reshape(n_l * n_h * prof.shape[2], n_p)  # (L*H*R, P)
    mean = nanmean(flat, 0)
    with np.errstate(invalid="ignore"):
        std = np.sqrt(nanmean((flat - mean) ** 2, 0))
    q10, q90 = _quantiles(flat)
    within = dist <= train_len if train_len is not None else np.ones(n_p, bool)
    beyond = ~within
    mx_in, mx_out = as_float(nanmax(mean[within])), as_float(nanmax(mean[beyond]))
    head_env = nanmean(prof, axis=2)  # (L, H, P)
    head_excess = nanmax(head_env[..., beyond], -1) - nanmax(head_env[..., within], -1)  # (L, H)
    order = [int(i) for i in np.argsort(-np.nan_to_num(head_excess, nan=-np.inf).ravel(), kind="stable")]
    top = [
        TopHead(int(trace.layers[i // n_h]), int(trace.heads[i % n_h]), float(head_excess.ravel()[i]))
        for i in order[:N_TOP]
        if np.isfinite(head_excess.ravel()[i])
    ]
    position = np.asarray(trace.positions)
    layer_max = np.stack(
        [nanmean(trace.max_logit[li], 0) for li in range(trace.max_logit.shape[0])]
    )  # (L, N)
    early = position < train_len if train_len is not None else np.ones(position.size, bool)
    return LogitStats(
        label=label,
        distance=dist,
        mean=mean,
        std=std,
        q10=q10,
        q90=q90,
        n_rows=np.isfinite(flat).sum(0),
        head_excess=head_excess if head_excess.shape == (n_l, n_h) else np.full((n_l, n_h), np.nan),
        top_heads=top,
        position=position,
        layer_max_logit=layer_max,
        max_logit_within=mx_in,
        max_logit_beyond=mx_out,
        excess=mx_out - mx_in,
        envelope_ratio=mx_out / mx_in if mx_in > 0 and mx_out > 0 else float("nan"),
        row_max_within=as_float(nanmean(layer_max[:, early])),
        row_max_beyond=as_float(nanmean(layer_max[:, ~early])),
    )


def logit_explosion(trace_or_cmp, *, train_len: int | None = None) -> LogitExplosionResult:
    """Envelope of the running-max logit profile against distance, within vs beyond train_len.

    Raises InvalidArgumentError when no trace holds profile rows.

    >>> from tests.synthetic import make_comparison
    >>> s = logit_explosion(make_comparison(n=256, train_len=64)).summary()
    >>> s["baseline"]["excess"] > 0.5, abs(s["lambda"]["excess"]) < 1e-6
    (True, True)
    """
    traces = as_traces(trace_or_cmp)
    if not any(np.asarray(t.logit_profile).size for t in traces.values()):
        raise InvalidArgumentError(
            "no trace holds logit profile rows; capture with profile rows to analyze logits"
        )
    tl = common_train_len(traces, train_len)
    per_label = {lab: _logit_stats(lab, t, tl) for lab, t in traces.items()}
    return LogitExplosionResult(labels=list(traces), train_len=tl, per_label=per_label)
