"""The result of `perplexity_over_documents`: the loss past T over documents, one window each.

Every document is one independent window of a `LossResult` (`analyze.loss`): the in-range
reference is the mean over positions T/2..T, log bins run to the end of the window, "fluent
until" is a sustained crossing (censored windows shown as ≥), and the `loss_breakdown` verdict
comes from the interval between documents. Optional labels: "recompute" (each token from its
last T tokens re-encoded, the in-distribution reference on the same tokens) and
"<mode> (shuffled)" (the contamination control on paragraph-shuffled copies).

Curves: each document's NLL is smoothed (centred moving average over `smooth` tokens), then
the mean over documents and the 10% / 90% quantiles across documents are taken per position.

Example:
    >>> import numpy as np
    >>> nll = {"baseline": np.full((2, 64), 2.0, np.float32), "lambda": np.full((2, 64), 1.5, np.float32)}
    >>> res = DocumentPerplexityResult.build(["baseline", "lambda"], 16, 64, ["a", "b"], nll)
    >>> res.summary()["lambda"]["nll_beyond"], res.summary()["baseline"]["n_documents"]
    (1.5, 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lminf_diag.analyze.base import downsample_index, label_colors, line_figure, mark_train_len
from lminf_diag.analyze.fluency import BINS_PER_OCTAVE, SUSTAIN, TOLERANCE
from lminf_diag.analyze.loss import LossResult, spoken
from lminf_diag.analyze.names import sentence_start
from lminf_diag.analyze.palette import BAND_OPACITY, rgba
from lminf_diag.analyze.perplexity import moving_average, smooth_window

BAND = (0.1, 0.9)
LEGACY = {"nll_1_2x": (1.0, 2.0), "nll_2_4x": (2.0, 4.0)}  # older summary keys, kept for callers
DESCRIPTION = (
    "Loss (negative log-likelihood, nats) of each next token against its position, averaged over "
    "{n} document(s) of {length} tokens; the shaded band spans the 10%-90% range across documents "
    "(curves smoothed over {smooth} tokens). The in-range reference is the mean over positions T/2..T; "
    "log-spaced bins run to the end of the window. A model that breaks down past its training length "
    "(dashed line) shows the loss rising there; a working fix keeps it level."
)


def _range_mean(nll: np.ndarray, lo: int, hi: int) -> float:
    part = np.asarray(nll[:, lo:hi], dtype=np.float64)
    finite = np.isfinite(part)
    return float(part[finite].mean()) if finite.any() else float("nan")


@dataclass
class DocumentPerplexityResult(LossResult):
    """Per label: `nll[label]` (documents, length) raw per-token NLL (NaN where not computed),
    `mean`/`lo`/`hi` (length,) smoothed mean and 10%/90% quantiles across documents."""

    length: int = 0
    documents: list[str] = field(default_factory=list)
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
        *,
        costs: dict[str, str] | None = None,
        from_books: bool = False,
        tolerance: float = TOLERANCE,
        sustain: int = SUSTAIN,
        bins_per_octave: int = BINS_PER_OCTAVE,
    ) -> DocumentPerplexityResult:
        """Smooth, average and describe raw per-document NLL arrays (see the module docstring).

        labels may include "recompute" and "<mode> (shuffled)" next to the run labels; `costs`
        says what a label cost (the recomputed reference), `from_books` whether the documents are
        bundled books (classics, likely in the training data).
        """
        smooth = smooth or (smooth_window(train_len) if train_len else max(1, min(256, length // 32)))
        rows = {m: np.asarray(nll[m], dtype=np.float64).reshape(-1, length) for m in labels}
        res = cls(
            labels=list(labels),
            train_len=train_len,
            nll=rows,
            window_names=list(documents),
            tolerance=tolerance,
            sustain=sustain,
            bins_per_octave=bins_per_octave,
            from_books=from_books,
            costs=dict(costs or {}),
            length=length,
            documents=list(documents),
            capped_at={m: (capped_at or {}).get(m) for m in labels},
            notes=list(notes or []),
            smooth=smooth,
        )
        for m in labels:
            raw = res.nll[m]
            smoothed = np.stack([moving_average(r, smooth) for r in raw]) if len(raw) else raw.copy()
            smoothed[~np.isfinite(raw)] = np.nan  # no smoothed tail past a cap
            res.mean[m] = _nan_stat(smoothed, "mean")
            res.lo[m] = _nan_stat(smoothed, "lo")
            res.hi[m] = _nan_stat(smoothed, "hi")
        desc = DESCRIPTION.format(n=len(documents), length=length, smooth=smooth)
        for m, cap in res.capped_at.items():
            if cap is not None:
                desc += f" The {m} run was stopped at {cap} tokens (positions past it are not computed)."
        for m, cost in res.costs.items():
            desc += f" {sentence_start(spoken(m))}: {cost}."
        if res.notes:
            desc += " Skipped: " + "; ".join(res.notes) + "."
        res.description = desc
        return res

    def summary(self) -> dict[str, dict[str, float]]:
        """label -> key figures, then nll_within (T/2..T), nll_beyond (T..end), nll_1_2x, nll_2_4x (older
        keys), capped_at (NaN if not) and n_documents."""
        base = super().summary()
        out = {}
        tl = int(self.train_len)
        for m in self.labels:
            legacy = self.legacy_summary(m)
            row = {**base.get(m, {}), "nll_within": legacy["nll_within"], "nll_beyond": legacy["nll_beyond"]}
            row.update(
                {k: _range_mean(self.nll[m], int(a * tl), int(b * tl)) for k, (a, b) in LEGACY.items()}
            )
            cap = self.capped_at.get(m)
            row["capped_at"] = float("nan") if cap is None else float(cap)
            row["n_documents"] = float(len(self.documents))
            out[m] = row
        return out

    def findings(self) -> list[str]:
        """The loss findings (verdicts, intervals, control), after a sentence per capped run."""
        tl = int(self.train_len)
        caps = [
            f"{sentence_start(spoken(m))} was stopped at {cap} tokens"
            + (
                " (before the training length: no figure past T for it)."
                if cap <= tl
                else f", so its figures past T cover positions {tl}..{cap} only."
            )
            for m, cap in self.capped_at.items()
            if cap is not None
        ]
        return caps + super().findings()

    def to_frame(self) -> pd.DataFrame:
        """Per label and position: label, position, mean_nll, nll_q10, nll_q90 (smoothed curves)."""
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

    def bin_frame(self) -> pd.DataFrame:
        """The log bins to the end of the window (`LossResult.to_frame`)."""
        return super().to_frame()

    def document_frame(self) -> pd.DataFrame:
        """Per label and document: in_range (T/2..T), past (T..end), rise, ratio, fluent_until, censored,
        fluent_text ('≥ n' when censored)."""
        return self.window_frame().rename(columns={"window": "document"})

    def figures(self) -> list[go.Figure]:
        """Verdict nets; mean NLL vs position with the 10-90% band; log bins to the end; fluent until."""
        colors = label_colors(self.labels)
        fig = line_figure(self.title, "position (tokens)", f"NLL (nats, {self.smooth}-token moving average)")
        idx = downsample_index(self.length)
        x = idx.tolist()
        for m in self.labels:
            c = colors[m]
            band = {
                "mode": "lines",
                "line": {"width": 0},
                "hoverinfo": "skip",
                "showlegend": False,
                "legendgroup": m,
            }
            fig.add_trace(go.Scatter(x=x, y=self.hi[m][idx], name=f"{m} 90%", **band))
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=self.lo[m][idx],
                    name=f"{m} 10%",
                    fill="tonexty",
                    fillcolor=rgba(c, BAND_OPACITY),
                    **band,
                )
            )
            cap = self.capped_at.get(m)
            name = m if cap is None else f"{m} (stopped at {cap} tokens)"
            fig.add_trace(
                go.Scatter(
                    x=x, y=self.mean[m][idx], mode="lines", line={"color": c}, name=name, legendgroup=m
                )
            )
        curve = mark_train_len(fig, self.train_len)
        forest, bins, fluency = super().figures()
        return [curve, forest, bins, fluency]


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
