"""Plotly figures of a `LabResult`: one colour per scheme, solid baseline, dashed LM-Infinite.

Example:
    >>> from lminf_diag.lab.result import LabResult
    >>> lab_figures(LabResult(cells=[], fluency=[], train_len=128))
    []
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lminf_diag.analyze.base import PATCHED_COLORS, line_figure, mark_train_len
from lminf_diag.lab.result import FIGURES, SCHEME_WORDS, LabResult

MODEL_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd") + PATCHED_COLORS
DASH = {"baseline": "solid"}


def _style(result: LabResult, model: str, label: str) -> dict[str, Any]:
    colors = {m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(result.models())}
    return {"color": colors[model], "dash": DASH.get(label, "dash")}


def _name(result: LabResult, model: str, label: str) -> str:
    scheme = next((c.scheme for c in result.cells if c.model == model), None) or next(
        (f.scheme for f in result.fluency if f.model == model), "")
    shown = "LM-Infinite" if label == "lambda" else label
    return f"{model} ({SCHEME_WORDS.get(scheme, scheme)}), {shown}"


def key_figures_plot(result: LabResult) -> Any:
    """2 x 2 panels: each key figure against the multiple of the training length."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{h} ({u})" for _, h, u in FIGURES])
    frame = result.to_frame()
    for model in result.models():
        for lab in result.labels:
            rows = frame[(frame.model == model) & (frame.label == lab)].sort_values("multiple")
            if rows.empty:
                continue
            for i, (key, _, _) in enumerate(FIGURES):
                fig.add_trace(
                    dict(type="scatter", x=rows["multiple"], y=rows[key], mode="lines+markers",
                         name=_name(result, model, lab), legendgroup=f"{model}-{lab}", showlegend=i == 0,
                         line=_style(result, model, lab)),
                    row=i // 2 + 1, col=i % 2 + 1,
                )
    fig.update_xaxes(type="log", title_text="length / training length")
    fig.update_layout(title="Key figures against length, per scheme (solid: plain, dashed: LM-Infinite)",
                      template="plotly_white", height=700, margin={"t": 90})
    return fig


def fluency_plot(result: LabResult) -> Any:
    """Loss against position (log axis) to the longest length, per scheme, plain and patched."""
    fig = line_figure("How far past the training length each scheme stays fluent",
                      "position (tokens)", "mean NLL in the bin (nats per byte)", log_x=True)
    for f in result.fluency:
        for lab, curve in f.nll.items():
            fig.add_scatter(x=f.bin_end, y=curve, mode="lines+markers", name=_name(result, f.model, lab),
                            line=_style(result, f.model, lab))
    if result.fluency:
        mark_train_len(fig, result.train_len, log_x=True)
    return fig


def entropy_plot(result: LabResult) -> Any:
    """Mean attention entropy against the number of keys attended, at each model's longest length."""
    fig = line_figure("Attention entropy against tokens attended (longest length)",
                      "keys attended n", "mean entropy (nats)", log_x=True)
    top = 0.0
    for model in result.models():
        cell = result.longest(model)
        if cell is None:
            continue
        top = max(top, float(np.max(cell.entropy_n)))
        for lab, curve in cell.entropy.items():
            fig.add_scatter(x=cell.entropy_n, y=curve, mode="lines", name=_name(result, model, lab),
                            line=_style(result, model, lab))
    if top:
        n = np.geomspace(1, top, 64)
        fig.add_scatter(x=n, y=np.log(n), mode="lines", name="uniform attention ln n",
                        line={"color": "gray", "dash": "dot"})
        mark_train_len(fig, result.train_len, log_x=True)
    return fig


def lab_figures(result: LabResult) -> list[Any]:
    """The lab section's figures (none when the result is empty)."""
    figs = []
    if result.cells:
        figs.append(key_figures_plot(result))
    if result.fluency:
        figs.append(fluency_plot(result))
    if result.cells:
        figs.append(entropy_plot(result))
    return figs
