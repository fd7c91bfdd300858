"""What every analysis result offers, and the plotting helpers they share.

Figure conventions (all analyzers):
- `figures()` returns a list of plotly `Figure`s (each has `.show()`, `.write_html()`);
- line plots overlay one line per label, coloured by `label_colors` (one palette,
  `analyze.palette`: the same label has the same colour in every figure); figures that cannot be
  overlaid (heat maps, scatter plots coloured by position) use subplots with one column per
  label, in label order, and a sequential colour scale (`palette.SEQUENTIAL`);
- interval bands are light fills (`palette.BAND_OPACITY`) drawn under their line;
- every subclass's `figures()` output goes through `figure_style.finish_figure`: legend in the
  palette's order, integer ticks on layer axes, x axes clipped to the data;
- in Jupyter a result shows as a small table of its verdicts and key figures (`_repr_html_`), and
  `repr` is one line (`display.short_repr`), never an array;
- the training length is a dashed vertical line annotated "training length" on every axis
  whose x is a position or a distance in tokens (`mark_train_len`);
- a line holds at most MAX_POINTS points (`downsample_index`, log-spaced on log axes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from lminf_diag.analyze.estimate import Estimate, Verdict

from lminf_diag.analyze import palette
from lminf_diag.analyze.display import result_html, short_repr
from lminf_diag.analyze.figure_style import finish_figures

MAX_POINTS = 2000
BASELINE_COLOR = palette.LABEL_COLORS["baseline"]
PATCHED_COLORS = tuple(c for k, c in palette.LABEL_COLORS.items() if k != "baseline")


@dataclass
class AnalysisResult:
    """Base of every analyzer's result: per-label key figures, a table and plotly figures.

    Subclasses fill `labels` (baseline first), `train_len` (None if unknown), and override
    `title`, `description` (plain words: what the figures show), `key_figures` (the estimates
    with intervals between windows that the report's table shows), `verdicts` (one per factor
    and label where the result decides one), `findings` (sentences generated from verdicts and
    intervals), `to_frame` and `figures`. `summary` is derived from `key_figures`.
    """

    labels: list[str] = field(default_factory=list)
    train_len: int | None = None
    title: str = ""
    description: str = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Keep the short `repr` (a dataclass would generate one that prints every array) and
        pass each subclass's `figures()` output through `finish_figure`."""
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = AnalysisResult.__repr__  # set before @dataclass runs, which then keeps it
        own = cls.__dict__.get("figures")
        if own is not None and not getattr(own, "_finished", False):

            def figures(self, *args, _own=own, **kw):  # type: ignore[no-untyped-def]
                return finish_figures(_own(self, *args, **kw))

            figures.__doc__, figures.__name__, figures._finished = own.__doc__, "figures", True
            cls.figures = figures

    def __repr__(self) -> str:
        """One line: kind, labels, windows, T and the verdicts with their key figure."""
        return short_repr(self)

    def _repr_html_(self) -> str:
        """Jupyter: the title, the verdicts and the key figures with their 95% intervals."""
        return result_html(self)

    def key_figures(self) -> list[Estimate]:
        """The result's key figures, each an `Estimate` with its interval and n (report order)."""
        return []

    def verdicts(self) -> list[Verdict]:
        """The verdicts this result decides (factor, label, present/absent/inconclusive)."""
        return []

    def findings(self) -> list[str]:
        """Plain-word sentences, each generated from a verdict or an interval of this result."""
        return []

    def key_frame(self) -> pd.DataFrame:
        """The key figures as a table: figure, label, estimate, ci_low, ci_high, n, unit, null."""
        import pandas as pd

        cols = ["figure", "label", "estimate", "ci_low", "ci_high", "n", "unit", "null"]
        return pd.DataFrame([{k: e.to_dict()[k] for k in cols} for e in self.key_figures()], columns=cols)

    def verdict_frame(self) -> pd.DataFrame:
        """The verdicts as a table: factor, label, verdict, figure, margin, tests."""
        import pandas as pd

        cols = ["factor", "label", "verdict", "figure", "margin", "tests"]
        return pd.DataFrame([v.to_dict() for v in self.verdicts()], columns=cols)

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> {key figure name: estimate} from `key_figures` (NaN where undefined)."""
        out: dict[str, dict[str, float]] = {}
        for e in self.key_figures():
            out.setdefault(e.label, {})[e.figure] = float(e.estimate)
        return out

    def to_frame(self) -> pd.DataFrame:
        """The result as a long-format pandas DataFrame with a `label` column."""
        raise NotImplementedError

    def figures(self) -> list[go.Figure]:
        """Plotly figures, baseline and patched runs side by side; light enough for a report."""
        raise NotImplementedError


def label_colors(labels: list[str]) -> dict[str, str]:
    """Fixed colours per label from the one palette (`analyze.palette`), the same in every figure.

    >>> label_colors(["baseline", "lambda"])
    {'baseline': '#1f77b4', 'lambda': '#ff7f0e'}
    >>> label_colors(["window"])["window"] == label_colors(["baseline", "window"])["window"]
    True
    """
    return palette.label_colors(labels)


def downsample_index(n: int, max_points: int = MAX_POINTS, log: bool = False) -> np.ndarray:
    """Sorted indices into a length-n series, at most max_points of them, first and last kept.

    log=True spaces them evenly in log(index + 1), for a log x axis.

    >>> downsample_index(10, 4).tolist()
    [0, 3, 6, 9]
    >>> len(downsample_index(100_000, 2000, log=True)) <= 2000
    True
    """
    if n <= max_points:
        return np.arange(n)
    if log:
        idx = np.unique(np.round(np.geomspace(1, n, max_points)).astype(np.int64) - 1)
    else:
        idx = np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))
    return idx


def nanmean(arr: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN (no RuntimeWarning).

    >>> float(nanmean(np.array([1.0, np.nan, 3.0])))
    2.0
    """
    arr = np.asarray(arr, dtype=np.float64)
    finite = ~np.isnan(arr)
    count = finite.sum(axis=axis)
    total = np.where(finite, arr, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def nanmax(arr: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Max ignoring NaN; all-NaN or empty slices give NaN (no warning, no exception)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0 and axis is None:
        return np.float64(np.nan)
    filled = np.where(np.isnan(arr), -np.inf, arr)
    out = filled.max(axis=axis, initial=-np.inf)
    return np.where(np.isneginf(out), np.nan, out)


def as_float(x: object) -> float:
    """A plain Python float (NaN for None)."""
    return float("nan") if x is None else float(np.asarray(x, dtype=np.float64))


def axis_ref(i: int) -> str:
    """Axis reference suffix of the i-th subplot (0-based): "" for the first, then "2", "3", ..."""
    return "" if i == 0 else str(i + 1)


def mark_train_len(
    fig: go.Figure, train_len: int | None, *, log_x: bool = False, n_axes: int = 1
) -> go.Figure:
    """Dashed vertical line at the training length, annotated "training length", on each x axis.

    Shapes on a log axis take data coordinates but annotations take log10 coordinates, so the
    annotation position is converted. n_axes: how many subplots (x, x2, ...) to mark.

    >>> import plotly.graph_objects as go
    >>> fig = mark_train_len(go.Figure(), 128)
    >>> fig.layout.shapes[0].x0, fig.layout.annotations[0].text
    (128, 'training length')
    """
    if train_len is None:
        return fig
    x = int(train_len)
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
            line={"dash": "dash", "color": "gray", "width": 1.5},
            name="training length",
        )
        fig.add_annotation(
            x=float(np.log10(x)) if log_x else x,
            xref=f"x{ref}",
            yref=f"y{ref} domain",
            y=1.0,
            yanchor="bottom",
            text="training length",
            showarrow=False,
            font={"size": 11, "color": "gray"},
        )
    return fig


def line_figure(title: str, x_title: str, y_title: str, *, log_x: bool = False) -> go.Figure:
    """An empty figure with titled axes (legend on the right), ready for overlaid lines."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title=y_title,
        template="plotly_white",
        margin={"t": 70},
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fig
