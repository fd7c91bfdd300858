"""`StreamResult`: the loss of one long stream against position, next to the in-range reference.

One stream is one text, so the units of its intervals are *blocks* of `block` consecutive tokens
(T/16 by default, at least 1): the in-range reference is the mean loss over positions T/2..T
(`analyze.fluency.in_range_loss`, the same reference as every loss figure), and each key figure's
interval is Student t over block means (Welch for a difference of two stretches). Adjacent blocks
of one text are not independent, so these intervals are narrower than intervals between texts
would be; the method string says so. Key figures: in-range NLL, NLL past T, their difference (the
`loss_breakdown` verdict, margin 0.1 nats, as in `analyze.loss`), the last octave of the stream
(n/2..n) minus in range, and "fluent until" (`analyze.fluency.window_fluency`; one stream: no
interval). Sentences come from the verdict and the intervals only.

Example:
    >>> import numpy as np
    >>> nll = np.r_[np.nan, np.random.default_rng(0).normal(2.0, 0.3, 4095)].astype(np.float32)
    >>> res = StreamResult(nll=nll, train_len=256, labels=["lambda"], method="lambda")
    >>> res.verdicts()[0].verdict
    'absent'
    >>> res.to_frame().columns.tolist()[:4]
    ['label', 'bin_start', 'bin_end', 'nll']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy import stats as sps

from lminf_diag.analyze.base import AnalysisResult, label_colors, line_figure, mark_train_len
from lminf_diag.analyze.estimate import CONFIDENCE, Estimate, Verdict, describe, estimate, verdict
from lminf_diag.analyze.fluency import (
    TOLERANCE,
    binned_loss,
    censored_median,
    in_range_loss,
    loss_bin_edges,
    window_fluency,
)
from lminf_diag.analyze.names import display_name

MARGIN = 0.1  # nats per token, as `analyze.loss.MARGIN`
UNIT = "nats"
IN_RANGE, PAST, RISE = "NLL in range (T/2..T)", "NLL past T", "NLL past T minus in range"
LAST, FLUENT = "NLL of the last octave (n/2..n) minus in range", "fluent until"


def block_means(nll: np.ndarray, start: int, stop: int, block: int) -> np.ndarray:
    """Mean finite loss of each whole block of `block` tokens in [start, stop) (NaN-only blocks dropped).

    >>> block_means(np.arange(10.0), 0, 10, 4).tolist()
    [1.5, 5.5]
    """
    stop = min(stop, len(nll))
    count = max(0, (stop - start) // block)
    if count == 0:
        return np.zeros(0)
    part = np.asarray(nll[start : start + count * block], dtype=np.float64).reshape(count, block)
    finite = np.isfinite(part)
    with np.errstate(invalid="ignore"):
        means = np.where(finite, part, 0.0).sum(1) / finite.sum(1)
    return means[finite.any(1)]


def welch(a: np.ndarray, b: np.ndarray, *, figure: str, label: str, block: int) -> Estimate:
    """mean(a) - mean(b) with a Welch t interval (NaN bounds with fewer than 2 blocks on a side)."""
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return Estimate(figure, label, float("nan"), float("nan"), float("nan"), 0, UNIT)
    diff = float(a.mean() - b.mean())
    method = f"Welch t over blocks of {block} tokens of one stream (adjacent blocks are not independent)"
    if na < 2 or nb < 2:
        return Estimate(figure, label, diff, float("nan"), float("nan"), na + nb, UNIT, "", method)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    den = va**2 / (na - 1) + vb**2 / (nb - 1)
    df = (va + vb) ** 2 / den if den > 0 else float(na + nb - 2)
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * se if se > 0 else 0.0
    return Estimate(figure, label, diff, diff - half, diff + half, na + nb, UNIT,
                    "in-range loss (T/2..T) of the same stream", method)


@dataclass
class StreamResult(AnalysisResult):
    """The per-token loss `nll` (N,) float32 of one stream (nll[0] = NaN), and how it ran.

    `stats`: attention-statistics samples {start, end (S,), entropy, max_logit (S, L)};
    `peak_cache_entries`: the most KV entries any layer held between chunks, against
    `cache_bound` = n_global + n_local.
    """

    nll: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    method: str = "lambda"
    settings: dict = field(default_factory=dict)
    seconds: float = float("nan")
    streamed: int = 0  # tokens streamed by the call that returned this (a resumed call: the rest only)
    peak_cache_entries: int = 0
    cache_bound: int = 0
    stats: dict = field(default_factory=dict)
    text: str = ""
    block: int | None = None  # tokens per interval unit (default T // 16, at least 1)
    margin: float = MARGIN
    title: str = "Loss over a long stream"
    description: str = (
        "Mean loss (negative log-likelihood, nats) per log-spaced bin of positions, to the end of the "
        "stream, read chunk by chunk with a bounded KV cache; the dashed line is the in-range reference "
        "(mean over positions T/2..T) and the band (1 + 10%) x it. Intervals are taken over blocks of "
        "consecutive tokens of this one stream."
    )

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = [self.method]
        if self.block is None:
            self.block = max(1, int(self.train_len or 256) // 16)

    def __len__(self) -> int:
        return int(len(self.nll))

    @property
    def tokens_per_second(self) -> float:
        return self.streamed / self.seconds if self.seconds and self.seconds > 0 else float("nan")

    @property
    def edges(self) -> np.ndarray:
        return loss_bin_edges(max(2, len(self)), int(self.train_len), 4)

    def _blocks(self, start: int, stop: int) -> np.ndarray:
        return block_means(self.nll, start, stop, int(self.block))

    def estimates(self) -> dict[str, Estimate]:
        """Every key figure, by short name (see the module docstring)."""
        T, n, lab, b = int(self.train_len), len(self), self.method, int(self.block)
        ref, past = self._blocks(T // 2, T), self._blocks(T, n)
        how = f"t over blocks of {b} tokens of one stream (adjacent blocks are not independent)"
        out = {
            "in_range": estimate(ref, figure=IN_RANGE, label=lab, unit=UNIT),
            "past": estimate(past, figure=PAST, label=lab, unit=UNIT),
            "rise": welch(past, ref, figure=RISE, label=lab, block=b),
            "last": welch(self._blocks(max(T, n // 2), n), ref, figure=LAST, label=lab, block=b),
        }
        for key in ("in_range", "past"):
            e = out[key]
            out[key] = Estimate(e.figure, e.label, e.estimate, e.ci_low, e.ci_high, e.n, e.unit, e.null, how, e.values)
        fl = window_fluency(self.nll, T, self.edges, tolerance=TOLERANCE)
        out["fluent"] = censored_median([fl.value], [fl.censored], figure=FLUENT + (" (≥, censored)" if fl.censored
                                                                                    else ""), label=lab)
        return out

    def key_figures(self) -> list[Estimate]:
        return list(self.estimates().values())

    def verdicts(self) -> list[Verdict]:
        rise = self.estimates()["rise"]
        tests = (f"loss past T against in-range loss (T/2..T) of the same stream of {len(self):,} tokens; "
                 "blocks of one text as units, content drift not controlled")
        return [verdict("loss_breakdown", rise, self.margin, tests)]

    def findings(self) -> list[str]:
        e = self.estimates()
        v = self.verdicts()[0]
        name = display_name(self.method)
        out = [describe(v, e["rise"], subject=f"Streamed over {len(self):,} tokens, {name}",
                        present="breaks down past the training length",
                        absent="keeps its in-range loss past the training length")]
        last = e["last"]
        if last.has_interval and last.ci_low > self.margin:
            out.append(f"At the end of the stream the loss is still above the in-range reference: {last.figure} "
                       f"{last.text()}.")
        elif last.has_interval and last.ci_high < self.margin:
            out.append(f"At the end of the stream the loss is within {self.margin:g} nats of the in-range "
                       f"reference: {last.figure} {last.text()}.")
        if self.cache_bound and self.peak_cache_entries:
            out.append(f"The KV cache held at most {self.peak_cache_entries:,} entries per layer (bound "
                       f"n_global + n_local = {self.cache_bound:,}) whatever the stream's length.")
        return out

    def to_frame(self) -> pd.DataFrame:
        """Per log bin: label, bin_start, bin_end, nll (mean), n_tokens, reference (in-range NLL)."""
        edges = self.edges
        means, counts = binned_loss(self.nll, edges)
        return pd.DataFrame({"label": self.method, "bin_start": edges[:-1], "bin_end": edges[1:], "nll": means,
                             "n_tokens": counts, "reference": in_range_loss(self.nll, int(self.train_len))})

    def stats_frame(self) -> pd.DataFrame:
        """Per statistics sample and layer: start, end, layer, entropy, max_logit (means over rows, heads)."""
        s = self.stats or {}
        if not len(s.get("start", ())):
            return pd.DataFrame(columns=["start", "end", "layer", "entropy", "max_logit"])
        S, L = s["entropy"].shape
        return pd.DataFrame({"start": np.repeat(s["start"], L), "end": np.repeat(s["end"], L),
                             "layer": np.tile(np.arange(L), S), "entropy": s["entropy"].ravel(),
                             "max_logit": s["max_logit"].ravel()})

    def figure(self) -> go.Figure:
        """Loss per log bin to the end of the stream, with the in-range reference and its band."""
        frame = self.to_frame()
        color = label_colors([self.method])[self.method]
        fig = line_figure(f"Loss per log-spaced bin over {len(self):,} streamed tokens",
                          "position (tokens, log scale)", "mean NLL (nats)", log_x=True)
        ref = float(frame["reference"].iloc[0]) if len(frame) else float("nan")
        x = frame["bin_start"].to_numpy()
        if math.isfinite(ref):
            fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[ref * (1 + TOLERANCE)] * 2, mode="lines",
                                     line={"color": "gray", "width": 0.5}, showlegend=False, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[ref] * 2, mode="lines", fill="tonexty",
                                     fillcolor="rgba(128,128,128,0.15)", line={"color": "gray", "dash": "dash"},
                                     name="in-range reference (T/2..T), band +10%"))
        fig.add_trace(go.Scatter(x=x, y=frame["nll"], name=self.method, mode="lines+markers",
                                 line={"color": color}, marker={"size": 4}))
        return mark_train_len(fig, self.train_len, log_x=True)

    def stats_figure(self) -> go.Figure | None:
        """Mean attention entropy and max logit (over layers, heads and rows) per sampled chunk."""
        frame = self.stats_frame()
        if frame.empty:
            return None
        from plotly.subplots import make_subplots

        per = frame.groupby(["start", "end"], as_index=False)[["entropy", "max_logit"]].mean()
        mid = (per["start"] + per["end"]) / 2
        fig = make_subplots(rows=1, cols=2, subplot_titles=("attention entropy (nats)", "max logit"))
        color = label_colors([self.method])[self.method]
        for col, name in ((1, "entropy"), (2, "max_logit")):
            fig.add_trace(go.Scatter(x=mid, y=per[name], mode="lines+markers", name=f"{self.method} {name}",
                                     line={"color": color}, marker={"size": 4}), row=1, col=col)
            fig.update_xaxes(type="log", title_text="position of the sampled chunk (tokens)", row=1, col=col)
        fig.update_layout(title="Attention statistics of sampled chunks, mean over layers and heads",
                          template="plotly_white")
        return mark_train_len(fig, self.train_len, log_x=True, n_axes=2)

    def figures(self) -> list[go.Figure]:
        """The binned loss against the reference; the attention statistics when sampled."""
        extra = self.stats_figure()
        return [self.figure()] + ([extra] if extra is not None else [])


__all__ = ["MARGIN", "StreamResult", "block_means", "welch"]
