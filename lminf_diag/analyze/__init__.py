"""Analyzers: each turns a Trace or a Comparison into a result with key figures, a table and plots.

logit_explosion        factor 1: attention logits at unseen distances
entropy_growth         factor 2: attention entropy growing like ln n
position_subspaces     factor 3: implicit absolute position in hidden states
perplexity_by_position the outcome: loss within vs beyond the training length
"""

from __future__ import annotations

import numpy as np

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.entropy import EntropyGrowthResult, EntropyStats, LogFit, entropy_growth
from lminf_diag.analyze.estimate import Estimate, Verdict
from lminf_diag.analyze.logits import LogitExplosionResult, LogitStats, TopHead, logit_explosion
from lminf_diag.analyze.palette import label_color, label_colors
from lminf_diag.analyze.perplexity import PerplexityResult, PerplexityStats, perplexity_by_position
from lminf_diag.analyze.positions import (
    LayerSubspace,
    PositionStats,
    PositionSubspaceResult,
    position_subspaces,
)
from lminf_diag.capture.windows import Replicate, as_windows, windows_train_len

__all__ = [
    "AnalysisResult",
    "EntropyGrowthResult",
    "Estimate",
    "Verdict",
    "Replicate",
    "EntropyStats",
    "LayerSubspace",
    "LogFit",
    "LogitExplosionResult",
    "LogitStats",
    "PerplexityResult",
    "PerplexityStats",
    "PositionStats",
    "PositionSubspaceResult",
    "TopHead",
    "analyze_all",
    "entropy_growth",
    "label_color",
    "label_colors",
    "logit_explosion",
    "perplexity_by_position",
    "position_subspaces",
]


def analyze_all(obj, train_len: int | None = None, *, reference=None, control=None) -> dict[str, AnalysisResult]:
    """Run every analyzer that the traces have data for, over one window or several.

    `obj`: a Trace, a Comparison (one window) or a `Replicate` / list of Comparisons (K windows;
    every key figure then carries an interval between windows). `reference` (the re-computation
    reference, one per window) and `control` (the baseline on shuffled copies) go to the loss
    analyzer (`perplexity_by_position`).
    Keys, in this order: "logits" (skipped when no trace holds logit-profile rows), "entropy",
    "positions" (skipped when no hidden states were captured), "perplexity".

    >>> from lminf_diag.synthetic import make_comparison
    >>> list(analyze_all([make_comparison(n=128, train_len=32, seed=s) for s in range(2)]))
    ['logits', 'entropy', 'positions', 'perplexity']
    """
    windows = as_windows(obj)
    tl = windows_train_len(windows, train_len)
    rep = Replicate([dict(w) for w in windows])
    traces = [t for w in windows for t in w.values()]
    out: dict[str, AnalysisResult] = {}
    if any(np.asarray(t.logit_profile).size for t in traces):
        out["logits"] = logit_explosion(rep, train_len=tl)
    out["entropy"] = entropy_growth(rep, train_len=tl)
    if any(np.asarray(t.hidden).size for t in traces):
        out["positions"] = position_subspaces(rep, train_len=tl)
    out["perplexity"] = perplexity_by_position(rep, train_len=tl, reference=reference, control=control)
    return out
