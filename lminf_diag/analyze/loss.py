"""The loss past the training length, replicated over windows: key figures, verdict, words, plots.

`LossResult` holds per-token NLL per label as (W, N) arrays, one row per independent window
(`analyze.fluency` defines the per-window statistics). Labels:

- run labels: "baseline" and mode names ("lambda", ...);
- the reference "recompute": every token t >= T predicted from its last T tokens, re-encoded
  with plain attention (`evaluate.recompute.recompute_nll`). It is the in-distribution loss of
  the SAME tokens, so a run's (loss past T - reference loss past T), paired by window, is the
  like-with-like effect of going past T, free of content drift. Tokens < T have the ordinary
  loss, so the reference's in-range loss equals the baseline's;
- controls "<label> (shuffled)": the same run on a paragraph-shuffled copy of each window's text
  (`data.control`), with "recompute (shuffled)" as their reference when present.

Key figures per label, each an `Estimate` over windows (Student t): in-range NLL (T/2..T), NLL
past T, their difference, the loss ratio, the difference to the reference past T (when present),
and "fluent until" (median with an order-statistic interval, censored windows as ≥) with the
share of windows fluent to their end. "Fluent" compares each bin with (1 + tolerance) x the
window's in-range loss, or, when the reference is present, with (1 + tolerance) x the
reference's loss over the same bin (the same tokens: like with like). For each control, the in-range
NLL of the shuffled copy minus the original's (paired by window): if the model memorised the text,
the original's loss is much lower.

Verdict `loss_breakdown` for every label except references: `present` when the 95% interval of
the net rise lies above MARGIN = 0.1 nats per token, `absent` when below it. The net rise is
(loss past T - reference past T) when the reference is there, else (loss past T - in-range
loss) of the same windows (content drift then not controlled, and the verdict says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import Estimate, Verdict, estimate, proportion, verdict
from lminf_diag.analyze.fluency import (
    BINS_PER_OCTAVE,
    SUSTAIN,
    TOLERANCE,
    Fluency,
    binned_loss,
    censored_median,
    in_range_loss,
    loss_bin_edges,
    loss_past,
    window_fluency,
)
from lminf_diag.analyze.forest import forest_figure, window_band
from lminf_diag.analyze.names import display_name
from lminf_diag.errors import InvalidArgumentError

MARGIN = 0.1  # nats per token: a rise smaller than this is not a breakdown
RECOMPUTE = "recompute"
SHUFFLED = " (shuffled)"
UNIT = "nats"
IN_RANGE, PAST, RISE, RATIO = "NLL in range (T/2..T)", "NLL past T", "NLL past T minus in range", "loss ratio"
NET_REF, FLUENT, TO_END = "NLL past T minus recomputed reference", "fluent until", "windows fluent to the end"
GAP = "in-range NLL, shuffled minus original"
CLASSICS = (
    "No contamination control was run: the bundled books are classics and likely in the model's training "
    "data, so its losses on them may be low from memory (rerun with a paragraph-shuffled control, "
    "`diag ppl --control shuffled`)."
)


def is_control(label: str) -> bool:
    """True for a control label "<label> (shuffled)"."""
    return label.endswith(SHUFFLED)


def original_of(label: str) -> str:
    """The label without its " (shuffled)" suffix."""
    return label[: -len(SHUFFLED)] if is_control(label) else label


def reference_of(label: str) -> str:
    """The reference a label is compared with: "recompute", or "recompute (shuffled)" for controls."""
    return RECOMPUTE + (SHUFFLED if is_control(label) else "")


def is_reference(label: str) -> bool:
    return original_of(label) == RECOMPUTE


def spoken(label: str) -> str:
    """How a label reads in a sentence.

    >>> spoken("baseline (shuffled)"), spoken("recompute")
    ('the baseline on the paragraph-shuffled copy', 'the recomputed reference (last T tokens re-encoded)')
    """
    base = original_of(label)
    name = "the recomputed reference (last T tokens re-encoded)" if base == RECOMPUTE else display_name(base)
    return f"{name} on the paragraph-shuffled copy" if is_control(label) else name


@dataclass(frozen=True)
class WindowLoss:
    """One window of one label: the loss figures and its fluency."""

    in_range: float
    past: float
    fluency: Fluency
    bins: np.ndarray  # (B,) mean NLL per bin (NaN where nothing was computed)

    @property
    def rise(self) -> float:
        return self.past - self.in_range

    @property
    def ratio(self) -> float:
        return self.past / self.in_range if self.in_range else float("nan")


@dataclass
class LossResult(AnalysisResult):
    """Per label, `nll[label]` (W, N) per-token NLL (NaN where undefined), one row per window."""

    nll: dict[str, np.ndarray] = field(default_factory=dict)
    window_names: list[str] = field(default_factory=list)
    tolerance: float = TOLERANCE
    sustain: int = SUSTAIN
    bins_per_octave: int = BINS_PER_OCTAVE
    margin: float = MARGIN
    from_books: bool = False  # the windows come from the bundled books (classics: likely seen in training)
    costs: dict[str, str] = field(default_factory=dict)  # label -> what it cost (the recomputed reference)
    title: str = "Loss past the training length"
    description: str = (
        "Mean loss (negative log-likelihood, nats) per log-spaced bin of positions, to the end of the "
        "window; "
        "the band spans the windows. The in-range reference is the mean over positions T/2..T. "
        "'recompute' predicts every token from its last T tokens re-encoded: the in-distribution loss of "
        "the same tokens."
    )
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.train_len is None:
            raise InvalidArgumentError("the training length is unknown; pass train_len=N")
        if not 0 < self.tolerance < 10 or self.sustain < 1 or self.bins_per_octave < 1:
            raise InvalidArgumentError(
                f"tolerance={self.tolerance} (a fraction such as 0.1), sustain={self.sustain} and "
                f"bins_per_octave={self.bins_per_octave} (both >= 1)"
            )
        self.nll = {lab: np.atleast_2d(np.asarray(a, dtype=np.float64)) for lab, a in self.nll.items()}
        shapes = {a.shape for a in self.nll.values()}
        if len(shapes) > 1:
            raise InvalidArgumentError(
                f"every label needs the same (windows, tokens) shape; got {sorted(shapes)}"
            )
        if not self.labels:
            self.labels = list(self.nll)
        if not self.window_names:
            self.window_names = [f"window {i}" for i in range(self.n_windows)]

    @property
    def n_windows(self) -> int:
        return next(iter(self.nll.values())).shape[0] if self.nll else 0

    @property
    def length(self) -> int:
        return next(iter(self.nll.values())).shape[1] if self.nll else 0

    @property
    def edges(self) -> np.ndarray:
        """(B + 1,) bin edges, log-spaced to the end of the window (`fluency.loss_bin_edges`)."""
        return loss_bin_edges(max(2, self.length), int(self.train_len), self.bins_per_octave)

    def run_labels(self) -> list[str]:
        """Labels judged by a verdict: everything but the references."""
        return [lab for lab in self.labels if not is_reference(lab)]

    def windows(self, label: str) -> list[WindowLoss]:
        """The per-window statistics of one label (computed once)."""
        if label not in self._cache:
            tl, edges = int(self.train_len), self.edges
            ref = reference_of(label)
            refs = self.nll[ref] if ref in self.nll and ref != label else [None] * self.n_windows
            out = []
            for row, ref_row in zip(self.nll[label], refs, strict=True):
                fl = window_fluency(
                    row, tl, edges, tolerance=self.tolerance, sustain=self.sustain, reference=ref_row
                )
                out.append(
                    WindowLoss(in_range_loss(row, tl), loss_past(row, tl), fl, binned_loss(row, edges)[0])
                )
            self._cache[label] = out
        return self._cache[label]

    def fluent_until(self, label: str) -> Estimate:
        """Median "fluent until" over windows (tokens; censored windows as ≥, ci_high inf when censored)."""
        ws = self.windows(label)
        return censored_median(
            [w.fluency.value for w in ws], [w.fluency.censored for w in ws], figure=FLUENT, label=label
        )

    def net(self, label: str) -> Estimate:
        """What the verdict is decided from: past T minus the reference past T, or minus in range."""
        ref = reference_of(label)
        mine = self.windows(label)
        if ref in self.nll and ref != label:
            diff = [a.past - b.past for a, b in zip(mine, self.windows(ref), strict=True)]
            return estimate(
                diff,
                figure=NET_REF,
                label=label,
                unit=UNIT,
                null="each token's loss from its last T tokens, re-encoded",
            )
        return estimate([w.rise for w in mine], figure=RISE, label=label, unit=UNIT)

    def control_gap(self, label: str) -> Estimate | None:
        """For a control label: its in-range NLL minus the original's, paired by window."""
        orig = original_of(label)
        if not is_control(label) or orig not in self.nll:
            return None
        diff = [a.in_range - b.in_range for a, b in zip(self.windows(label), self.windows(orig), strict=True)]
        return estimate(
            diff, figure=GAP, label=label, unit=UNIT, null="the original text at the same positions"
        )

    def estimates(self, label: str) -> dict[str, Estimate]:
        """Every key figure of one label, by short name."""
        ws = self.windows(label)
        out = {
            "in_range": estimate([w.in_range for w in ws], figure=IN_RANGE, label=label, unit=UNIT),
            "past": estimate([w.past for w in ws], figure=PAST, label=label, unit=UNIT),
            "rise": estimate([w.rise for w in ws], figure=RISE, label=label, unit=UNIT),
            "ratio": estimate(
                [w.ratio for w in ws], figure=RATIO + " (past T / in range)", label=label, unit="x"
            ),
        }
        if not is_reference(label):
            net = self.net(label)
            if net.figure == NET_REF:
                out["net"] = net
            out["fluent"] = self.fluent_until(label)
            defined = [w for w in ws if math.isfinite(w.fluency.value)]
            out["to_end"] = proportion(
                sum(w.fluency.censored for w in defined),
                len(defined),
                figure=f"{TO_END} (censored, ≥)",
                label=label,
            )
        gap = self.control_gap(label)
        if gap is not None:
            out["gap"] = gap
        return out

    def key_figures(self) -> list[Estimate]:
        return [e for lab in self.labels for e in self.estimates(lab).values()]

    def verdicts(self) -> list[Verdict]:
        out = []
        for lab in self.run_labels():
            net = self.net(lab)
            if net.figure == NET_REF:
                tests = "loss past T against the in-distribution loss of the same tokens "
                tests += "(last T tokens re-encoded)"
            else:
                tests = (
                    "loss past T against in-range loss (T/2..T) of the same windows; "
                    "content drift not controlled"
                )
            if is_control(lab):
                tests += ", on a paragraph-shuffled copy (contamination control)"
            out.append(verdict("loss_breakdown", net, self.margin, tests))
        return out

    def findings(self) -> list[str]:
        from lminf_diag.analyze.loss_words import loss_findings

        return loss_findings(self)

    def legacy_summary(self, label: str) -> dict[str, float]:
        """Older summary keys, means over windows: nll_within (T/2..T), nll_beyond, ppl_*, nll_increase."""
        e = self.estimates(label)
        within, beyond = e["in_range"].estimate, e["past"].estimate
        return {
            "nll_within": within,
            "nll_beyond": beyond,
            "ppl_within": float(np.exp(within)),
            "ppl_beyond": float(np.exp(beyond)),
            "nll_increase": beyond - within,
        }

    def to_frame(self) -> pd.DataFrame:
        """Per label and bin: label, bin_start, bin_end, nll (mean over windows), nll_min, nll_max,
        n_windows."""
        edges = self.edges
        frames = []
        for lab in self.labels:
            bins = np.stack([w.bins for w in self.windows(lab)])  # (W, B)
            mean, lo, hi = window_band(list(bins))
            frames.append(
                pd.DataFrame(
                    {
                        "label": lab,
                        "bin_start": edges[:-1],
                        "bin_end": edges[1:],
                        "nll": mean,
                        "nll_min": lo,
                        "nll_max": hi,
                        "n_windows": np.isfinite(bins).sum(0),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def window_frame(self) -> pd.DataFrame:
        """Per label and window: in_range, past, rise, ratio, fluent_until, censored, fluent_text ('≥ n')."""
        rows = [
            {
                "label": lab,
                "window": self.window_names[i],
                "in_range": w.in_range,
                "past": w.past,
                "rise": w.rise,
                "ratio": w.ratio,
                "fluent_until": w.fluency.value,
                "censored": w.fluency.censored,
                "fluent_text": w.fluency.text(),
            }
            for lab in self.labels
            for i, w in enumerate(self.windows(lab))
        ]
        return pd.DataFrame(rows)

    def figures(self) -> list[go.Figure]:
        """The verdict nets with intervals; binned loss against position to the end; fluent until."""
        nets = [self.net(lab) for lab in self.run_labels()]
        nets += [g for g in (self.control_gap(lab) for lab in self.labels) if g is not None]
        forest = forest_figure(
            nets,
            "Loss past T, net of its reference (95% interval between windows)",
            "nats per token",
            margin=self.margin,
        )
        from lminf_diag.analyze.loss_figures import bin_figure, fluency_figure

        return [forest, bin_figure(self), fluency_figure(self)]


__all__ = [
    "CLASSICS",
    "MARGIN",
    "RECOMPUTE",
    "SHUFFLED",
    "LossResult",
    "WindowLoss",
    "is_control",
    "is_reference",
    "original_of",
    "reference_of",
    "spoken",
]
