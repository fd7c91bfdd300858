"""The finishing pass every result figure goes through: legend order, integer layer ticks, x range.

`finish_figure` is applied to whatever a result's `figures()` returns (`AnalysisResult` wraps
each subclass's `figures`), and can be applied to any plotly figure:

- legend entries follow the palette's order (`palette.legend_order`: baseline, lambda,
  mask_only, cap_only, window, ...), whatever order the traces were added in;
- an axis titled "layer" (or "... layer ...") shows integer ticks only;
- an x axis that holds only line or marker traces without horizontal error bars is clipped to
  the x range where the traces have data (no empty stretch left or right of the curves).

Example:
    >>> import plotly.graph_objects as go
    >>> fig = go.Figure([go.Scatter(x=[0, 1, 2], y=[1.0, 2.0, None], name="lambda"),
    ...                  go.Scatter(x=[0, 1, 2], y=[1.0, 1.5, 2.0], name="baseline")])
    >>> fig = finish_figure(fig)
    >>> [t.legendrank for t in fig.data], list(fig.layout.xaxis.range)
    ([101, 100], [0.0, 2.0])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lminf_diag.analyze.palette import LABEL_COLORS, label_mode

MAX_LAYER_TICKS = 16  # at most this many layer ticks (dtick 1 up to 16 layers, then 2, 3, ...)
MARKER_PAD = 0.02  # fraction of the x span left either side when markers sit on the edge


def _axis_key(ref: str | None, letter: str) -> str:
    """'x' -> 'xaxis', 'x2' -> 'xaxis2' (None is the first axis)."""
    return f"{letter}axis{(ref or letter)[1:]}"


def _floats(values: Any) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return np.empty(0)


def _order_legend(fig: Any) -> None:
    rank = {mode: i for i, mode in enumerate(LABEL_COLORS)}
    for trace in fig.data:
        name = getattr(trace, "name", None)
        if name:
            mode = label_mode(str(name).split(" (")[0])
            trace.legendrank = 100 + rank.get(mode, 800)


def _layer_ticks(fig: Any) -> None:
    for key in [k for k in fig.layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))]:
        axis = fig.layout[key]
        title = (axis.title.text or "") if axis.title else ""
        if "layer" not in title.lower():
            continue
        letter = key[0]
        values = np.concatenate(
            [_floats(getattr(t, letter, None)) for t in fig.data if _axis_key(getattr(t, f"{letter}axis", None), letter) == key]
            or [np.empty(0)]
        )
        values = values[np.isfinite(values)]
        if values.size and not np.all(values == np.round(values)):
            continue  # not layer indices
        span = float(values.max() - values.min()) if values.size else 0.0
        axis.update(tickmode="linear", tick0=0, dtick=max(1, math.ceil((span + 1) / MAX_LAYER_TICKS)), tickformat="d")


def _clip_x(fig: Any) -> None:
    by_axis: dict[str, list[Any]] = {}
    for t in fig.data:
        by_axis.setdefault(_axis_key(getattr(t, "xaxis", None), "x"), []).append(t)
    for key, traces in by_axis.items():
        axis = fig.layout[key]
        if axis.range is not None or any(t.type not in ("scatter", "scattergl") for t in traces):
            continue
        if any(t.error_x is not None and t.error_x.array is not None for t in traces):
            continue
        xs = []
        for t in traces:
            x = _floats(t.x)
            if x.size == 0:
                continue
            y = _floats(t.y)
            ok = np.isfinite(x) & (np.isfinite(y) if y.size == x.size else True)
            xs.append(x[ok])
        x = np.concatenate(xs) if xs else np.empty(0)
        log = axis.type == "log"
        if log:
            x = x[x > 0]
        if x.size < 2 or x.min() == x.max():
            continue
        lo, hi = (np.log10(x.min()), np.log10(x.max())) if log else (x.min(), x.max())
        if any("markers" in (t.mode or "") for t in traces):
            pad = MARKER_PAD * (hi - lo)
            lo, hi = lo - pad, hi + pad
        axis.range = [float(lo), float(hi)]


def finish_figure(fig: Any) -> Any:
    """Legend order, integer layer ticks and x ranges clipped to the data; returns the same figure."""
    if not hasattr(fig, "data") or not hasattr(fig, "layout"):
        return fig
    _order_legend(fig)
    _layer_ticks(fig)
    _clip_x(fig)
    return fig


def finish_figures(figs: Any) -> Any:
    """`finish_figure` on a figure, a list of figures or a dict of them (same container back)."""
    if isinstance(figs, dict):
        return {k: finish_figure(f) for k, f in figs.items()}
    if isinstance(figs, (list, tuple)):
        return type(figs)(finish_figure(f) for f in figs)
    return finish_figure(figs)


__all__ = ["finish_figure", "finish_figures"]
