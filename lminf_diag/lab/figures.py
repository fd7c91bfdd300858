"""Plotly figures (`plotly.graph_objects.Figure`, each with `.show()`) of a `LabResult`.

A verdict map, the loss by position and the copy gain by distance.

Example:
    >>> from lminf_diag.lab.result import LabResult
    >>> lab_figures(LabResult(train_len=128))
    []
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lminf_diag.analyze.base import line_figure, mark_train_len
from lminf_diag.analyze.palette import label_color
from lminf_diag.lab.result import COPY_MARGIN, LabResult

DASH = {"baseline": "solid"}
VERDICT_CODE = {"absent": 0, "inconclusive": 1, "present": 2}
# a sequential scale (light = absent, dark = present): no verdict cell reads as a run label's colour
VERDICT_SCALE = [[0.0, "#f7fbff"], [0.5, "#9ecae1"], [1.0, "#2171b5"]]


def _style(result: LabResult, model: str, label: str) -> dict[str, Any]:
    """Colour by model (the palette's fixed lab-model colours), solid for plain, dashed for LM-Infinite."""
    return {"color": label_color(model), "dash": DASH.get(label, "dash")}


def _name(model: str, label: str) -> str:
    return f"{model}, {'LM-Infinite' if label == 'lambda' else label}"


def verdict_map(result: LabResult) -> Any:
    """Rows: model, length and run; columns: factors; cells: the verdict (light absent, dark present)."""
    import plotly.graph_objects as go

    verdicts = result.verdicts()
    factors = list(dict.fromkeys(v.factor for v in verdicts))
    rows = list(dict.fromkeys(v.label for v in verdicts))
    z = np.full((len(rows), len(factors)), np.nan)
    text = [["" for _ in factors] for _ in rows]
    for v in verdicts:
        i, j = rows.index(v.label), factors.index(v.factor)
        z[i, j] = VERDICT_CODE.get(v.verdict, np.nan)
        text[i][j] = v.verdict
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=factors,
            y=rows,
            text=text,
            texttemplate="%{text}",
            colorscale=VERDICT_SCALE,
            zmin=0,
            zmax=2,
            showscale=False,
        )
    )
    fig.update_layout(
        title="Verdicts per model, length and run (from each interval against its null)",
        template="plotly_white",
        height=max(300, 22 * len(rows) + 120),
        yaxis={"autorange": "reversed"},
    )
    return fig


def _binned(nll: np.ndarray, train_len: int, per_octave: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(bin end (B,), mean over windows (B,)) of per-token losses (K, N), log bins with edges at T/2 and T."""
    n = nll.shape[1]
    edges = np.unique(
        np.r_[
            np.round(np.geomspace(1, n, int(np.log2(n) * per_octave) + 1)), train_len // 2, train_len
        ].astype(int)
    )
    per_window = np.stack(
        [np.nanmean(nll[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], axis=1
    )  # (K, B)
    return edges[1:] - 1, np.nanmean(per_window, 0)


def loss_plot(result: LabResult) -> Any:
    """Mean loss per log bin over the windows, per model, plain (solid) and LM-Infinite (dashed)."""
    fig = line_figure(
        "Loss against position, mean over windows",
        "position (tokens)",
        "mean NLL in the bin (nats per byte)",
        log_x=True,
    )
    for f in result.fluency:
        for lab, nll in f.nll.items():
            ends, mean = _binned(nll, f.train_len)
            fig.add_scatter(
                x=ends,
                y=mean,
                mode="lines+markers",
                name=_name(f.model, lab),
                line=_style(result, f.model, lab),
            )
    mark_train_len(fig, result.train_len, log_x=True)
    return fig


def copy_plot(result: LabResult) -> Any:
    """Copy gain (control minus repeat, nats per token) against the distance d, with 95% intervals."""
    fig = line_figure(
        f"Copy task: does the model use a string seen d tokens back? (margin {COPY_MARGIN} nats)",
        "distance d between the copies (tokens)",
        "copy gain (nats per token)",
        log_x=True,
    )
    for c in result.copy:
        for lab in c.gain:
            est = [(e, d) for e, _, d in c.estimates(COPY_MARGIN) if e.label.endswith(f":{lab}")]
            y = np.array([e.estimate for e, _ in est])
            fig.add_scatter(
                x=[d for _, d in est],
                y=y,
                mode="lines+markers",
                name=_name(c.model, lab),
                line=_style(result, c.model, lab),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [e.ci_high - e.estimate for e, _ in est],
                    "arrayminus": [e.estimate - e.ci_low for e, _ in est],
                },
            )
    mark_train_len(fig, result.train_len, log_x=True)
    return fig


def lab_figures(result: LabResult) -> list[Any]:
    """The lab section's figures (none when the result is empty)."""
    figs = []
    if result.verdicts():
        figs.append(verdict_map(result))
    if result.fluency:
        figs.append(loss_plot(result))
    if result.copy:
        figs.append(copy_plot(result))
    return figs


__all__ = ["copy_plot", "lab_figures", "loss_plot", "verdict_map"]
