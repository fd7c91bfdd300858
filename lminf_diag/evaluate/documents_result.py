"""The result of `perplexity_over_documents`: mean per-token loss over documents, with its spread.

Curves: each document's NLL is smoothed (centred moving average over `smooth` tokens), then
the mean over documents and the 10% / 90% quantiles across documents are taken per position.
Key figures average the raw per-token NLL of every document over a range of positions:
within (< T), 1-2x (T..2T) and 2-4x (2T..4T), T the training length; NaN where no position
of the range was computed (a capped baseline, a window shorter than the range).

Example:
    >>> import numpy as np
    >>> nll = {"baseline": np.full((2, 64), 2.0, np.float32), "lambda": np.full((2, 64), 1.5, np.float32)}
    >>> res = DocumentPerplexityResult.build(["baseline", "lambda"], 16, 64, ["a", "b"], nll)
    >>> res.summary()["lambda"]["nll_1_2x"], res.summary()["baseline"]["n_documents"]
    (1.5, 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lminf_diag.analyze.base import (
    AnalysisResult,
    downsample_index,
    label_colors,
    line_figure,
    mark_train_len,
)
from lminf_diag.analyze.perplexity import moving_average

BAND = (0.1, 0.9)
RANGES = {"nll_within": (0.0, 1.0), "nll_1_2x": (1.0, 2.0), "nll_2_4x": (2.0, 4.0)}
DESCRIPTION = (
    "Loss (negative log-likelihood, nats) of each next token against its position, averaged over "
    "{n} document(s) of {length} tokens; the shaded band spans the 10%-90% range across documents "
    "(curves smoothed over {smooth} tokens). A model that breaks down past its training length "
    "(dashed line) shows the loss rising there; a working fix keeps it level."
)


def _hex_rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _range_mean(nll: np.ndarray, lo: int, hi: int) -> float:
    part = np.asarray(nll[:, lo:hi], dtype=np.float64)
    finite = np.isfinite(part)
    return float(part[finite].mean()) if finite.any() else float("nan")


def _ranges(nll: np.ndarray, train_len: int | None, length: int) -> dict[str, float]:
    """Mean raw NLL over each position range of RANGES (all positions count as within if T is unknown)."""
    if train_len is None:
        return {k: (_range_mean(nll, 0, length) if k == "nll_within" else float("nan")) for k in RANGES}
    return {k: _range_mean(nll, int(a * train_len), int(b * train_len)) for k, (a, b) in RANGES.items()}


@dataclass
class DocumentPerplexityResult(AnalysisResult):
    """Per mode: `nll[mode]` (documents, length) raw per-token NLL (NaN where not computed),
    `mean`/`lo`/`hi` (length,) smoothed mean and 10%/90% quantiles across documents."""

    length: int = 0
    documents: list[str] = field(default_factory=list)
    nll: dict[str, np.ndarray] = field(default_factory=dict)
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    lo: dict[str, np.ndarray] = field(default_factory=dict)
    hi: dict[str, np.ndarray] = field(default_factory=dict)
    capped_at: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    smooth: int = 256
    title: str = "Loss by position over documents"
    description: str = ""

    @classmethod
    def build(
        cls,
        labels: list[str],
        train_len: int | None,
        length: int,
        documents: list[str],
        nll: dict[str, np.ndarray],
        capped_at: dict[str, int | None] | None = None,
        notes: list[str] | None = None,
        smooth: int | None = None,
    ) -> DocumentPerplexityResult:
        """Smooth, average and describe raw per-document NLL arrays (see the module docstring)."""
        smooth = smooth or max(1, min(256, length // 32))
        res = cls(
            labels=list(labels),
            train_len=train_len,
            length=length,
            documents=list(documents),
            nll={m: np.asarray(nll[m], dtype=np.float32) for m in labels},
            capped_at={m: (capped_at or {}).get(m) for m in labels},
            notes=list(notes or []),
            smooth=smooth,
        )
        for m in labels:
            rows = res.nll[m].astype(np.float64)
            smoothed = np.stack([moving_average(r, smooth) for r in rows]) if len(rows) else rows
            smoothed[~np.isfinite(rows)] = np.nan  # no smoothed tail past a cap
            res.mean[m] = _nan_stat(smoothed, "mean")
            res.lo[m] = _nan_stat(smoothed, "lo")
            res.hi[m] = _nan_stat(smoothed, "hi")
        desc = DESCRIPTION.format(n=len(documents), length=length, smooth=smooth)
        for m, cap in res.capped_at.items():
            if cap is not None:
                desc += f" The {m} run was stopped at {cap} tokens (positions past it are not computed)."
        if res.notes:
            desc += " Skipped: " + "; ".join(res.notes) + "."
        res.description = desc
        return res

    def summary(self) -> dict[str, dict[str, float]]:
        """mode -> nll_within (< T), nll_1_2x (T..2T), nll_2_4x (2T..4T), capped_at (NaN if not), n_documents."""
        out = {}
        for m in self.labels:
            row = _ranges(self.nll[m], self.train_len, self.length)
            cap = self.capped_at.get(m)
            row["capped_at"] = float("nan") if cap is None else float(cap)
            row["n_documents"] = float(len(self.documents))
            out[m] = row
        return out

    def to_frame(self) -> pd.DataFrame:
        """Per mode and position: label, position, mean_nll, nll_q10, nll_q90 (smoothed curves)."""
        frames = [
            pd.DataFrame(
                {
                    "label": m,
                    "position": np.arange(self.length),
                    "mean_nll": self.mean[m],
                    "nll_q10": self.lo[m],
                    "nll_q90": self.hi[m],
                }
            )
            for m in self.labels
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def document_frame(self) -> pd.DataFrame:
        """Per mode and document: label, document, and the three range means of the raw NLL."""
        rows = [
            {"label": m, "document": doc, **_ranges(self.nll[m][i : i + 1], self.train_len, self.length)}
            for m in self.labels
            for i, doc in enumerate(self.documents)
        ]
        return pd.DataFrame(rows, columns=["label", "document", *RANGES])

    def figures(self) -> list[go.Figure]:
        """Mean NLL vs position with the 10-90% band, one colour per mode; training length marked."""
        colors = label_colors(self.labels)
        fig = line_figure(self.title, "position (tokens)", f"NLL (nats, {self.smooth}-token moving average)")
        idx = downsample_index(self.length)
        x = idx.tolist()
        for m in self.labels:
            c = colors[m]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=self.hi[m][idx],
                    mode="lines",
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=m,
                    name=f"{m} 90%",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=self.lo[m][idx],
                    mode="lines",
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor=_hex_rgba(c, 0.18),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=m,
                    name=f"{m} 10%",
                )
            )
            cap = self.capped_at.get(m)
            name = m if cap is None else f"{m} (stopped at {cap} tokens)"
            fig.add_trace(
                go.Scatter(
                    x=x, y=self.mean[m][idx], mode="lines", line={"color": c}, name=name, legendgroup=m
                )
            )
        return [mark_train_len(fig, self.train_len)]


def _nan_stat(x: np.ndarray, which: str) -> np.ndarray:
    """Per-column mean / 10% / 90% quantile over rows, ignoring NaN (NaN where a column has none)."""
    if x.size == 0:
        return np.full(x.shape[1] if x.ndim == 2 else 0, np.nan)
    finite = np.isfinite(x)
    has = finite.any(axis=0)
    out = np.full(x.shape[1], np.nan)
    if which == "mean":
        out[has] = np.where(finite, x, 0.0).sum(0)[has] / finite.sum(0)[has]
        return out
    q = BAND[0] if which == "lo" else BAND[1]
    out[has] = np.nanquantile(np.where(finite, x, np.nan)[:, has], q, axis=0)
    return out


__all__ = ["DocumentPerplexityResult"]
