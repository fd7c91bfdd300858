"""Factor 2 of LM-Infinite: attention entropy keeps growing like ln n past the training length.

x is the number of keys each row actually attends (from the run's plan); uniform attention over
x keys has entropy exactly ln x, so a fit entropy = a + b ln x has slope b = 1 for it.
`analyze.entropy_stats` defines the per-window statistics; here they become estimates with a 95%
interval between independent windows, verdicts and sentences:

- baseline and `cap_only` (every key attended): the slope past T, net of the same fit over as
  many octaves just below T (the null). `cap_only` isolates factor 2: it removes unseen
  distances but keeps every key.
- Λ-masked runs: the entropy gap to the baseline at an equal attended count (their slope past
  T is zero by construction and is not reported as evidence).

Verdict `entropy_growth`: `present` when the net interval lies above MARGIN (nats per ln x for
slopes, nats for gaps), `absent` when below it, else `inconclusive`.
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
from lminf_diag.analyze.entropy_stats import WindowEntropyStats, window_entropy_stats
from lminf_diag.analyze.estimate import Estimate, Verdict, describe, estimate, paired_difference, verdict
from lminf_diag.analyze.fit import LogFit
from lminf_diag.analyze.forest import forest_figure
from lminf_diag.analyze.logit_stats import attends_every_key
from lminf_diag.analyze.names import display_name, sentence_start
from lminf_diag.capture.windows import as_windows, window_labels, windows_train_len
from lminf_diag.errors import InvalidArgumentError

MARGIN = 0.1
SLOPE_UNIT, GAP_UNIT = "nats per ln(keys)", "nats"
SLOPE, GAP = "entropy slope past T", "entropy gap at equal attended count"

__all__ = ["EntropyGrowthResult", "EntropyStats", "LogFit", "entropy_growth"]


@dataclass
class EntropyStats:
    """One label: its per-window statistics and whether it attends every key."""

    label: str
    windows: list[WindowEntropyStats]
    every_key: bool
    layers: np.ndarray  # (L,) model layer indices

    @property
    def octaves(self) -> float:
        vals = [w.octaves for w in self.windows if np.isfinite(w.octaves)]
        return float(np.mean(vals)) if vals else float("nan")


@dataclass
class EntropyGrowthResult(AnalysisResult):
    """Result of `entropy_growth`; `per_label` maps label -> EntropyStats."""

    per_label: dict[str, EntropyStats] = field(default_factory=dict)
    n_windows: int = 0
    title: str = "Attention entropy against the number of keys attended"
    description: str = (
        "Mean attention entropy over layers and heads against the number of keys each query actually "
        "attends (log scale; the dotted line is uniform attention, ln n). For runs that attend every key "
        "the slope past the training length is compared with the slope over as many octaves just below it "
        "(the null); the distance cap alone (cap_only) isolates this factor. A Λ-masked run attends a "
        "capped number of keys, so its flat line past T is built in: it is compared instead with the "
        "baseline's entropy at the same number of keys. Bars: 95% intervals between text windows."
    )

    def _estimates(self, lab: str) -> dict[str, Estimate]:
        s = self.per_label[lab]
        if s.every_key:
            beyond = [w.slope_beyond for w in s.windows]
            null = [w.slope_null for w in s.windows]
            return {
                "net": paired_difference(beyond, null, figure=f"{SLOPE}, net of null", label=lab,
                                         unit=SLOPE_UNIT, null_name="same fit over the octaves below T"),
                "beyond": estimate(beyond, figure=SLOPE, label=lab, unit=SLOPE_UNIT),
                "null": estimate(null, figure="entropy slope below T (null)", label=lab, unit=SLOPE_UNIT),
            }
        gaps = [w.gap for w in s.windows]
        return {"net": estimate(gaps, figure=GAP, label=lab, unit=GAP_UNIT, null="baseline at equal count")}

    def key_figures(self) -> list[Estimate]:
        return [e for lab in self.labels for e in self._estimates(lab).values()]

    def verdicts(self) -> list[Verdict]:
        out = []
        for lab in self.labels:
            s = self.per_label[lab]
            if s.every_key:
                what = (
                    "growth past T net of the growth just below T"
                    if lab == "baseline"
                    else "unseen distances removed: growth from the number of keys alone"
                )
                tests = f"slope of entropy against ln(keys attended) past T, {what}"
            else:
                tests = "entropy past T against the baseline's at an equal number of attended keys"
            out.append(verdict("entropy_growth", self._estimates(lab)["net"], MARGIN, tests))
        return out

    def findings(self) -> list[str]:
        lines = []
        for v in self.verdicts():
            s = self.per_label[v.label]
            net = self._estimates(v.label)["net"]
            name = display_name(v.label)
            if s.every_key:
                oct_ = f" over {s.octaves:.1f} octave(s) past T" if np.isfinite(s.octaves) else ""
                subject = f"For {name}, entropy growth{oct_}"
                present, absent = "is present (faster than just below T)", "is absent (no faster than below T)"
            else:
                subject = sentence_start(f"{name}'s entropy past T (what it tests: equal attended count)")
                present, absent = "is higher than the baseline's at the same count", "matches the in-range level"
            lines.append(describe(v, net, subject=subject, present=present, absent=absent))
        return lines

    def to_frame(self) -> pd.DataFrame:
        """Per window and label: slope past T, its null, octaves, entropy gap and its count."""
        rows = [
            {"label": lab, "window": i, "slope_beyond": w.slope_beyond, "slope_null": w.slope_null,
             "octaves": w.octaves, "gap": w.gap, "gap_count": w.gap_count}
            for lab, s in self.per_label.items()
            for i, w in enumerate(s.windows)
        ]
        return pd.DataFrame(rows)

    def curve_frame(self) -> pd.DataFrame:
        """Per window, label and measured row: keys attended x and mean entropy y."""
        frames = [
            pd.DataFrame({"label": lab, "window": i, "keys": w.x, "entropy": w.y})
            for lab, s in self.per_label.items()
            for i, w in enumerate(s.windows)
        ]
        return pd.concat(frames, ignore_index=True)

    def figures(self) -> list[go.Figure]:
        """Net estimates with intervals; entropy against keys attended; per-layer slopes past T."""
        heads = [self._estimates(lab)["net"] for lab in self.labels]
        forest = forest_figure(heads, "Entropy growth, net of its null (95% interval between windows)",
                               "nats per ln(keys) (slopes) or nats (gaps)", margin=MARGIN)
        colors = label_colors(self.labels)
        fig = line_figure("Entropy against keys attended (every window)", "keys attended (log scale)",
                          "entropy (nats)", log_x=True)
        xs = np.unique(np.concatenate([w.x for s in self.per_label.values() for w in s.windows]))
        idx = downsample_index(xs.size, log=True)
        fig.add_trace(go.Scatter(x=xs[idx], y=np.log(xs[idx]), name="uniform attention, ln n",
                                 line={"color": "black", "dash": "dot", "width": 1}))
        for lab, s in self.per_label.items():
            for i, w in enumerate(s.windows):
                order = np.argsort(w.x, kind="stable")
                keep = order[downsample_index(order.size, 600)]
                fig.add_trace(go.Scatter(x=w.x[keep], y=w.y[keep], name=lab, legendgroup=lab, showlegend=i == 0,
                                         mode="markers", marker={"color": colors[lab], "size": 3, "opacity": 0.5}))
        mark_train_len(fig, self.train_len, log_x=True)
        lay = line_figure("Entropy slope past T per layer (mean over windows)", "layer", SLOPE_UNIT)
        for lab, s in self.per_label.items():
            per = [w.layer_slopes for w in s.windows if w.layer_slopes is not None]
            if per:
                lay.add_trace(go.Scatter(x=s.layers, y=np.nanmean(np.stack(per), 0), name=lab,
                                         mode="lines+markers", line={"color": colors[lab]}))
        lay.update_xaxes(dtick=1 if len(next(iter(self.per_label.values())).layers) <= 32 else None)
        return [forest, fig, lay] if lay.data else [forest, fig]


def entropy_growth(obj, *, train_len: int | None = None, per_head: bool = True) -> EntropyGrowthResult:
    """Factor 2 over one window (a Trace or Comparison) or several (a `Replicate`).

    `per_head` is accepted for compatibility (per-layer slopes are always computed).

    >>> from lminf_diag.synthetic import make_comparison
    >>> r = entropy_growth([make_comparison(n=512, train_len=128, seed=s) for s in range(3)])
    >>> [(v.label, v.verdict) for v in r.verdicts()]
    [('baseline', 'absent'), ('lambda', 'absent')]
    """
    del per_head
    windows = as_windows(obj)
    labels = window_labels(windows)
    tl = windows_train_len(windows, train_len)
    if tl is None:
        raise InvalidArgumentError("the training length is unknown; pass train_len=N")
    per_label = {}
    for lab in labels:
        stats = [window_entropy_stats(w[lab], tl, w.get("baseline")) for w in windows]
        first = windows[0][lab]
        per_label[lab] = EntropyStats(lab, stats, attends_every_key(first), np.asarray(first.layers))
    return EntropyGrowthResult(labels=labels, train_len=tl, per_label=per_label, n_windows=len(windows))
