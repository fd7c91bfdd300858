"""Factor 1 of LM-Infinite: attention logits explode at distances never seen in training.

Measured per independent window, then estimated with a 95% interval between windows
(`analyze.logit_stats` defines the statistics):

- runs that attend every key (baseline, `cap_only`): the *paired excess*, row by row the max
  logit at distances (T, T + m] against the m nearest in-range distances (T - m, T], net of the
  same statistic at a pretend training length T/2 (the null: nothing there is unseen);
- Λ-masked runs (`lambda`, `mask_only`, `window`): past n_local such a row never scores a key at
  an unseen *used* distance, so an excess that is zero by construction would test nothing. They
  are read by the *used-logit shift*: the row-max logits they actually use past T against their
  in-range rows, net of the same shift at T/2.

Verdict `logit_explosion`: `present` when the net interval lies above MARGIN logit units,
`absent` when it lies below, else `inconclusive`.

The paper's reference script plots the running max of the last row's logits over distance
(mean ± std over layers and samples); the envelope figure here is that curve, averaged over
64+ profiled rows per window, with the band between windows.
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
from lminf_diag.analyze.estimate import Estimate, Verdict, describe, estimate, paired_difference, verdict
from lminf_diag.analyze.forest import add_band, forest_figure, window_band
from lminf_diag.analyze.logit_stats import WindowLogitStats, attends_every_key, envelope, window_logit_stats
from lminf_diag.analyze.names import display_name, sentence_start
from lminf_diag.capture.windows import as_windows, window_labels, windows_train_len
from lminf_diag.errors import InvalidArgumentError

MARGIN = 0.25  # logit units (a factor of e^0.25 = 1.28 in attention odds)
UNIT = "logit units"
N_TOP = 5
PAIRED, USED = "paired logit excess", "used-logit shift"


@dataclass
class TopHead:
    """A (layer, head) whose paired excess at T (mean over windows) is among the largest."""

    layer: int
    head: int
    excess: float


@dataclass
class LogitStats:
    """One label: per-window statistics and the curves drawn (distance grid of the first window)."""

    label: str
    windows: list[WindowLogitStats]
    every_key: bool
    distance: np.ndarray  # (P,)
    envelopes: list[np.ndarray]  # W x (P,) mean running-max profile per window
    top_heads: list[TopHead] = field(default_factory=list)


@dataclass
class LogitExplosionResult(AnalysisResult):
    """Result of `logit_explosion`; `per_label` maps label -> LogitStats."""

    per_label: dict[str, LogitStats] = field(default_factory=dict)
    n_windows: int = 0
    title: str = "Attention logits at unseen distances"
    description: str = (
        "Does a query score keys at distances never seen in training higher than in-range keys? "
        "For runs that attend every key, each profiled row's largest logit at distances T..T+T/8 is "
        "compared with its largest at the T/8 nearest in-range distances (equal key counts), net of the "
        "same comparison at a pretend training length T/2. Λ-masked runs never use an unseen distance, "
        "so for them the question is whether the logits they do use past T look like in-range ones. "
        "Bars are 95% intervals between independent text windows; the curve is the running max over "
        "distance (band: range between windows)."
    )

    def _estimates(self, lab: str) -> dict[str, Estimate]:
        s = self.per_label[lab]
        tl = self.train_len
        half = tl // 2
        out: dict[str, Estimate] = {}
        for name, attr in ((PAIRED, "paired"), (USED, "used")):
            if name == PAIRED and not s.every_key:
                continue
            at_t = [getattr(w, attr).get(tl, np.nan) for w in s.windows]
            at_null = [getattr(w, attr).get(half, np.nan) for w in s.windows]
            out[f"{name} at T"] = estimate(at_t, figure=f"{name} at T", label=lab, unit=UNIT)
            out[f"{name} at T/2 (null)"] = estimate(at_null, figure=f"{name} at T/2 (null)", label=lab, unit=UNIT)
            out[f"{name}, net"] = paired_difference(
                at_t, at_null, figure=f"{name}, net of null", label=lab, unit=UNIT, null_name="same at T/2"
            )
        return out

    def _headline(self, lab: str, est: dict[str, Estimate] | None = None) -> Estimate:
        est = self._estimates(lab) if est is None else est
        return est[f"{PAIRED}, net"] if self.per_label[lab].every_key else est[f"{USED}, net"]

    def key_figures(self) -> list[Estimate]:
        """Per label: the headline net estimate first, then its raw value and null."""
        out = []
        for lab in self.labels:
            est = self._estimates(lab)
            head = self._headline(lab, est)
            out.append(head)
            out += [e for e in est.values() if e is not head]
        return out

    def verdicts(self) -> list[Verdict]:
        out = []
        for lab in self.labels:
            tests = (
                "paired, count-matched max logit beyond T vs the nearest in-range distances, net of T/2"
                if self.per_label[lab].every_key
                else "row-max logits used past T vs in-range rows (far keys at the capped distance), net of T/2"
            )
            out.append(verdict("logit_explosion", self._headline(lab), MARGIN, tests))
        return out

    def findings(self) -> list[str]:
        lines = []
        for v in self.verdicts():
            net = self._headline(v.label)
            if self.per_label[v.label].every_key:
                subject = f"For {display_name(v.label)}, logit explosion"
                present, absent = "is present", "is absent"
            else:
                subject = sentence_start(f"{display_name(v.label)}'s logits past T (what it tests: the logits it uses)")
                present, absent = "run above their in-range level", "stay at their in-range level"
            lines.append(describe(v, net, subject=subject, present=present, absent=absent))
        return lines

    def to_frame(self) -> pd.DataFrame:
        """Per window and label: paired excess and used-logit shift at T and at T/2."""
        rows = []
        for lab, s in self.per_label.items():
            for i, w in enumerate(s.windows):
                for pivot in sorted(w.used):
                    rows.append(
                        {"label": lab, "window": i, "pivot": pivot, "paired_excess": w.paired.get(pivot, np.nan),
                         "used_shift": w.used[pivot], "paired_rows": w.paired_rows if pivot == self.train_len else np.nan}
                    )
        return pd.DataFrame(rows)

    def top_heads_frame(self) -> pd.DataFrame:
        """Columns label, rank, layer, head, excess (paired excess at T, mean over windows)."""
        rows = [
            {"label": lab, "rank": i + 1, "layer": h.layer, "head": h.head, "excess": h.excess}
            for lab, s in self.per_label.items()
            for i, h in enumerate(s.top_heads)
        ]
        return pd.DataFrame(rows, columns=["label", "rank", "layer", "head", "excess"])

    def figures(self) -> list[go.Figure]:
        """The net estimates with intervals; the running-max envelope against distance."""
        forest = forest_figure(
            [self._headline(lab) for lab in self.labels],
            "Logit explosion, net of the T/2 null (95% interval between windows)",
            f"{UNIT}",
            margin=MARGIN,
        )
        colors = label_colors(self.labels)
        env = line_figure(
            "Running max of the logits over distance (mean over rows, layers and heads)",
            "distance (tokens, log scale)", f"running max logit ({UNIT})", log_x=True,
        )
        lines = []
        for lab, s in self.per_label.items():
            if not s.envelopes:
                continue
            mean, lo, hi = window_band(s.envelopes)
            keep = np.nonzero((s.distance > 0) & np.isfinite(mean))[0]
            keep = keep[downsample_index(keep.size, log=True)]
            add_band(env, s.distance[keep], lo[keep], hi[keep], colors[lab])  # bands first: under every line
            lines.append(go.Scatter(x=s.distance[keep], y=mean[keep], name=lab, line={"color": colors[lab]}))
        env.add_traces(lines)
        mark_train_len(env, self.train_len, log_x=True)
        return [forest, env]


def _top_heads(trace_layers: np.ndarray, trace_heads: np.ndarray, stats: list[WindowLogitStats]) -> list[TopHead]:
    heads = [w.head_paired for w in stats if w.head_paired is not None]
    if not heads:
        return []
    mean = np.nanmean(np.stack(heads), 0)  # (L, H)
    n_h = mean.shape[1]
    order = np.argsort(-np.nan_to_num(mean, nan=-np.inf).ravel(), kind="stable")[:N_TOP]
    return [
        TopHead(int(trace_layers[i // n_h]), int(trace_heads[i % n_h]), float(mean.ravel()[i]))
        for i in order
        if np.isfinite(mean.ravel()[i])
    ]


def logit_explosion(obj, *, train_len: int | None = None) -> LogitExplosionResult:
    """Factor 1 over one window (a Trace or Comparison) or several (a `Replicate`).

    Raises InvalidArgumentError when the training length is unknown or no trace has profile rows.

    >>> from lminf_diag.synthetic import make_comparison
    >>> r = logit_explosion([make_comparison(n=512, train_len=128, seed=s, growth=10) for s in range(3)])
    >>> [(v.label, v.verdict) for v in r.verdicts()]
    [('baseline', 'present'), ('lambda', 'absent')]
    """
    windows = as_windows(obj)
    labels = window_labels(windows)
    tl = windows_train_len(windows, train_len)
    if tl is None:
        raise InvalidArgumentError("the training length is unknown; pass train_len=N")
    if not any(np.asarray(t.logit_profile).size for w in windows for t in w.values()):
        raise InvalidArgumentError("no trace holds logit profile rows; capture with profile rows to analyze logits")
    per_label = {}
    for lab in labels:
        traces = [w[lab] for w in windows]
        stats = [window_logit_stats(t, tl) for t in traces]
        dist, _ = envelope(traces[0])
        envs = [envelope(t)[1] for t in traces if np.array_equal(np.asarray(t.profile_dist), dist)]
        per_label[lab] = LogitStats(
            label=lab, windows=stats, every_key=attends_every_key(traces[0]), distance=dist, envelopes=envs,
            top_heads=_top_heads(np.asarray(traces[0].layers), np.asarray(traces[0].heads), stats),
        )
    return LogitExplosionResult(labels=labels, train_len=tl, per_label=per_label, n_windows=len(windows))
