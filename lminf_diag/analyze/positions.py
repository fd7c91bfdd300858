"""Factor 3 of LM-Infinite: hidden states carry implicit absolute position, mostly in the first tokens.

Every figure is one value per independent window, estimated with a 95% interval between windows
(`analyze.estimate`). Positions >= b = max(64, n_global) (capped at T/2) are the *bulk*, the
others the *first tokens*; massive activations (norm > 20x the bulk's median, position 0 in real
models) are left out of every fit (`analyze.hidden_stats`).

- **Position probe** (`analyze.probe`): ridge on standardised states predicting ln(position + 1)
  over the in-range bulk [b, T), cross-validated with folds grouped by window, so every score is
  the R² of a whole text the probe never saw. Per layer: the median over held-out windows and
  its range (`to_frame`, figure). Key figure: the *best layer's* per-window R² (the layer with the
  highest median; choosing it among the captured layers biases it slightly upwards), net of the
  same probe at that layer with positions shuffled within each window. First tokens [1, b) are
  scored separately. With one window there is no grouped fold: R² is NaN, "inconclusive".
- **First-token distance** (`analyze.manifold`): distance of positions < first_tokens from the
  centroid of ONE fixed reference bulk (the baseline's in-range bulk of the same window), in its
  RMS spreads; median over layers per window.
- **Principal angles** between the in-range bulk and the states past T, minus their null (two
  in-range halves); median over layers per window, degrees.
- **Off-manifold ratio**: how far the states past T sit from the nearest baseline in-range state,
  relative to held-out in-range baseline states (1 = like unseen in-range states); median over
  layers >= 1 per window. `window` against `lambda` is the test the paper's argument needs:
  without the initial tokens, do later states leave the in-range manifold? The paired contrast
  (window - lambda, same tokens) cancels content drift.

Verdicts `implicit_position`: the baseline is `present` when the best layer's probe R² net of
the shuffled null has its interval above MARGIN_R2 (position is readable from states it never
trained on); a patched label is `present` when (off-manifold ratio - 1) lies above MARGIN_OFF
(its states past T leave the in-range manifold).

The paper's reference script shows a PCA of all positions of 16 sequences (layers 1-5, 10, 20)
and draws no probe; the PCA here is fitted on the bulk only, first tokens projected onto it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import Estimate, Verdict, describe, estimate, paired_difference, verdict
from lminf_diag.analyze.hidden_stats import LayerSubspace, bulk_bound, summary_angle
from lminf_diag.analyze.names import display_name
from lminf_diag.analyze.position_stats import PositionStats, label_stats
from lminf_diag.analyze.probe import median_range
from lminf_diag.capture.windows import as_windows, window_labels, windows_train_len
from lminf_diag.errors import InvalidArgumentError

MARGIN_R2 = 0.10  # probe R² above the shuffled null that counts as "position readable"
MARGIN_OFF = 0.10  # off-manifold ratio - 1: states past T 10% farther than unseen in-range ones
PROBE, PROBE_NET, PROBE_FIRST = (
    "position probe R², in-range bulk",
    "position probe R² net of shuffled positions",
    "position probe R², first tokens",
)
DIST, ANGLE, OFF, OFF_NET, CONTRAST = (
    "first-token distance",
    "principal angle excess over in-range halves",
    "off-manifold ratio past T",
    "off-manifold excess (ratio - 1)",
    "off-manifold ratio, window - lambda",
)
TESTS = {
    "baseline": "in-range bulk position probe under folds grouped by window, net of shuffled positions",
    "window": "without the initial tokens, do states past T leave the baseline's in-range manifold?",
    "lambda": "with the initial tokens kept (and distances capped), do states past T stay on the manifold?",
}


@dataclass
class PositionSubspaceResult(AnalysisResult):
    """Result of `position_subspaces`; `per_label` maps label -> PositionStats."""

    per_label: dict[str, PositionStats] = field(default_factory=dict)
    n_windows: int = 0
    bulk_start: int = 64
    first_tokens: int = 4
    reference: str = "baseline"  # label whose in-range bulk is the fixed reference
    patched: dict[str, bool] = field(default_factory=dict)
    title: str = "Implicit absolute position in hidden states"
    description: str = (
        "Can a linear probe read a token's position from its hidden state, for texts it never saw "
        "(folds grouped by window, first tokens and the bulk apart)? How far do the first tokens sit "
        "from the baseline's in-range bulk, and do the states past the training length leave that "
        "in-range manifold (distance to the nearest in-range state, against unseen in-range states)? "
        "Without the initial tokens (`window`) against LM-Infinite (`lambda`) is the paper's test. "
        "Bars are 95% intervals between independent text windows."
    )

    def _estimates(self, lab: str) -> dict[str, Estimate]:
        s = self.per_label[lab]
        out: dict[str, Estimate] = {}
        nan = np.full(len(s.windows), np.nan)
        best = s.best_layer
        r2 = nan if best is None else s.values("probe_r2", best)
        null = nan if best is None else s.values("probe_r2_null", best)
        first = nan if best is None else s.values("probe_r2_first", best)
        out[PROBE] = estimate(r2, figure=PROBE, label=lab, unit="R²")
        out[PROBE_NET] = paired_difference(
            r2, null, figure=PROBE_NET, label=lab, unit="R²", null_name="positions shuffled within windows"
        )
        out[PROBE_FIRST] = estimate(first, figure=PROBE_FIRST, label=lab, unit="R²")
        dist = s.per_window(lambda ly: ly.first_token_distance)
        out[DIST] = estimate(
            dist, figure=DIST, label=lab, unit=f"RMS spreads of {self.reference}'s in-range bulk"
        )
        ang = s.per_window(lambda ly: summary_angle(ly.principal_angles) - summary_angle(ly.null_angles))
        out[ANGLE] = estimate(ang, figure=ANGLE, label=lab, unit="degrees", null="two in-range halves")
        ratio = s.per_window(lambda ly: ly.off_manifold, deep=True)
        out[OFF] = estimate(
            ratio, figure=OFF, label=lab, unit="ratio", null="held-out in-range baseline states"
        )
        out[OFF_NET] = estimate(
            ratio - 1.0, figure=OFF_NET, label=lab, unit="ratio - 1", null="held-out in-range baseline states"
        )
        if lab == "window" and "lambda" in self.per_label:
            other = self.per_label["lambda"].per_window(lambda ly: ly.off_manifold, deep=True)
            out[CONTRAST] = paired_difference(
                ratio, other, figure=CONTRAST, label=lab, unit="ratio", null_name="lambda on the same tokens"
            )
        return out

    def _headline(self, lab: str, est: dict[str, Estimate] | None = None) -> Estimate | None:
        est = self._estimates(lab) if est is None else est
        return est.get(OFF_NET) if self.patched.get(lab) else est.get(PROBE_NET)

    def key_figures(self) -> list[Estimate]:
        """Per label: the verdict's figure first, then the others."""
        out = []
        for lab in self.labels:
            est = self._estimates(lab)
            head = self._headline(lab, est)
            out += ([head] if head is not None else []) + [e for e in est.values() if e is not head]
        return out

    def verdicts(self) -> list[Verdict]:
        out = []
        for lab in self.labels:
            head = self._headline(lab)
            if head is None:
                continue
            margin = MARGIN_OFF if self.patched.get(lab) else MARGIN_R2
            tests = TESTS["baseline"] if not self.patched.get(lab) else TESTS.get(lab, TESTS["lambda"])
            out.append(verdict("implicit_position", head, margin, tests))
        return out

    def findings(self) -> list[str]:
        """Sentences from the verdicts and intervals (what each patched line tests is said first)."""
        lines = []
        for v in self.verdicts():
            net, name = self._headline(v.label), display_name(v.label)
            if not self.patched.get(v.label):
                layer = self.per_label[v.label].best_layer
                if self.n_windows < 2:
                    lines.append(
                        f"Position probe, {name}: inconclusive (needs >= 2 windows; a probe cross-validated "
                        "within one text reads its content, not the position)."
                    )
                    continue
                subject = f"Implicit position in {name}'s hidden states (layer {layer}, in-range bulk)"
                present, absent = (
                    "is readable by a linear probe on unseen texts",
                    "is not readable beyond the margin",
                )
            else:
                subject = f"States past T under {name}"
                present = "leave the baseline's in-range manifold"
                absent = "stay on the baseline's in-range manifold"
            line = describe(v, net, subject=subject, present=present, absent=absent)
            lines.append(
                line if not self.patched.get(v.label) else f"{line[:-1]} (this line tests: {v.tests})."
            )
        lines += self._contrast_lines()
        return lines

    def _contrast_lines(self) -> list[str]:
        out = []
        if "window" in self.per_label and "lambda" in self.per_label:
            c = self._estimates("window")[CONTRAST]
            head = "Without the initial tokens, states past T sit"
            if not c.has_interval:
                head = "Without the initial tokens against LM-Infinite: inconclusive (no interval)"
            elif c.ci_low > 0:
                head += " farther from the in-range manifold than LM-Infinite's on the same tokens"
            elif c.ci_high < 0:
                head += " closer to the in-range manifold than LM-Infinite's on the same tokens"
            else:
                head = (
                    "Without the initial tokens, the distance of states past T from the in-range manifold "
                    "is not told apart from LM-Infinite's on the same tokens"
                )
            out.append(f"{head}: {c.figure} {c.text()}.")
        if self.reference in self.per_label:
            d = self._estimates(self.reference)[DIST]
            if np.isfinite(d.estimate):
                out.append(
                    f"The first {self.first_tokens} positions sit {d.text()} RMS spreads from the centroid of "
                    f"{display_name(self.reference)}'s in-range bulk (one reference for every run)."
                )
            a = self._estimates(self.reference)[ANGLE]
            if a.has_interval:
                word = (
                    "exceed" if a.ci_low > 0 else "fall below" if a.ci_high < 0 else "are not told apart from"
                )
                out.append(
                    f"Principal angles between {display_name(self.reference)}'s in-range states and its states "
                    f"past T {word} those between two in-range halves: excess {a.text()} degrees."
                )
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per (label, window, hidden layer): probe R² (held out), distances, angles, ratio."""
        rows = []
        for lab, s in self.per_label.items():
            for i, w in enumerate(s.windows):
                for ly in w:
                    rows.append(
                        {
                            "label": lab, "window": i, "hidden_layer": ly.hidden_layer,
                            "probe_r2": ly.probe_r2, "probe_r2_first": ly.probe_r2_first,
                            "probe_r2_null": ly.probe_r2_null, "first_token_distance": ly.first_token_distance,
                            "angle_beyond": summary_angle(ly.principal_angles),
                            "angle_null": summary_angle(ly.null_angles), "off_manifold": ly.off_manifold,
                            "n_massive": ly.n_massive,
                        }
                    )  # fmt: skip
        return pd.DataFrame(rows)

    def layer_table(self, lab: str) -> pd.DataFrame:
        """Per hidden layer: median held-out bulk R² over windows and its range (min, max)."""
        s = self.per_label[lab]
        rows = []
        for k in s.layer_ids:
            med, lo, hi = median_range(s.values("probe_r2", k))
            rows.append({"hidden_layer": k, "median": med, "min": lo, "max": hi})
        return pd.DataFrame(rows, columns=["hidden_layer", "median", "min", "max"])

    def figures(self) -> list:
        """Distance profile; PCA view; per-layer probe R² (median, range); off-manifold forest."""
        from lminf_diag.analyze.position_figures import position_figures

        return position_figures(self)


def position_subspaces(
    obj,
    *,
    layers: list[int] | None = None,
    n_components: int = 2,
    first_tokens: int = 4,
    train_len: int | None = None,
    bulk_start: int | None = None,
) -> PositionSubspaceResult:
    """Factor 3 over one window (a Trace or Comparison) or several (a `Replicate`, a list of Comparisons).

    layers: hidden-layer indices (values of `trace.hidden_layers`), default all. first_tokens:
    positions counted in the first-token distance. bulk_start: first bulk position (default
    max(64, n_global), capped at T/2). The probe needs >= 2 windows (else its R² is NaN).

    >>> from lminf_diag.synthetic import make_comparison
    >>> r = position_subspaces(make_comparison(n=256, train_len=128))  # one window: no grouped fold
    >>> [(v.label, v.verdict) for v in r.verdicts()]
    [('baseline', 'inconclusive'), ('lambda', 'inconclusive')]
    >>> r.summary()["baseline"]["first-token distance"] > 5  # first tokens planted far from the bulk
    True
    """
    if n_components < 1 or first_tokens < 0 or (bulk_start is not None and bulk_start < 1):
        raise InvalidArgumentError("need n_components >= 1, first_tokens >= 0 and bulk_start >= 1 (or None)")
    windows = as_windows(obj)
    labels = window_labels(windows)
    if not any(np.asarray(t.hidden).size for w in windows for t in w.values()):
        raise InvalidArgumentError("no trace holds hidden states; capture hidden layers to analyze positions")
    if layers is not None:
        known = {int(k) for w in windows for t in w.values() for k in np.asarray(t.hidden_layers)}
        if not set(layers) & known:
            raise InvalidArgumentError(f"layers={layers}; captured hidden layers are {sorted(known)}")
    tl = windows_train_len(windows, train_len)
    n_global = max(
        [int((t.meta.patch or {}).get("n_global") or 0) for w in windows for t in w.values()] + [0]
    )
    bound = int(bulk_start) if bulk_start is not None else bulk_bound(n_global, tl)
    with_hidden = [lab for lab in labels if np.asarray(windows[0][lab].hidden).size]
    ref = "baseline" if "baseline" in with_hidden else with_hidden[0]
    args = {"k": n_components, "first_tokens": first_tokens}
    # One BLAS thread: these small eigh/SVD calls got 10-40x slower with OpenBLAS threads on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        per_label = {lab: label_stats(lab, windows, ref, layers, tl, bound, args) for lab in labels}
    patched = {lab: windows[0][lab].meta.patch is not None and lab != "baseline" for lab in labels}
    return PositionSubspaceResult(
        labels=labels, train_len=tl, per_label=per_label, n_windows=len(windows), bulk_start=bound,
        first_tokens=first_tokens, reference=ref, patched=patched,
    )  # fmt: skip


__all__ = ["LayerSubspace", "PositionStats", "PositionSubspaceResult", "position_subspaces"]
