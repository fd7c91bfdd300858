"""`LabResult`: the OOD factors of every lab model at several multiples of its training length.

Rows are (model, multiple, label) with the key figures of the four analyzers; `Fluency` holds
each model's loss against position to the longest length, baseline and patched, and how far
each stays within `tolerance` of its in-range loss.

Example:
    >>> import numpy as np
    >>> cell = LabCell("lab-x", "rope", 8, 1024, {"baseline": {"nll_ratio": 2.0}},
    ...                np.array([1, 2]), {"baseline": np.array([0.0, 0.5])})
    >>> LabResult(cells=[cell], fluency=[], train_len=128).to_frame()[["model", "label", "nll_ratio"]].values.tolist()
    [['lab-x', 'baseline', 2.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SCHEME_WORDS = {"rope": "RoPE", "alibi": "ALiBi", "rope_partial": "partial RoPE", "none": "no position encoding"}
# the key figures, in table order: (key, header, unit)
FIGURES = (
    ("entropy_slope_beyond", "entropy slope >T", "nats per ln n"),
    ("logit_envelope_ratio", "logit envelope ratio", "beyond / within"),
    ("position_probe_r2", "position probe R²", "R²"),
    ("nll_ratio", "NLL >T / in-range", "ratio"),
)


@dataclass
class LabCell:
    """One model at one length: key figures per label and the mean entropy curve."""

    model: str
    scheme: str
    multiple: int  # length / training length
    length: int
    figures: dict[str, dict[str, float]]  # label -> figure key -> value
    entropy_n: np.ndarray  # (P,) attended keys of the entropy curve's points
    entropy: dict[str, np.ndarray]  # label -> (P,) mean entropy over layers and heads, nats


@dataclass
class Fluency:
    """Loss against position to `length` for one model, binned on a log axis, per label."""

    model: str
    scheme: str
    train_len: int
    length: int
    bin_end: np.ndarray  # (B,) last position of each bin
    nll: dict[str, np.ndarray]  # label -> (B,) mean NLL of the bin, nats per token
    reference: dict[str, float]  # label -> in-range loss: mean NLL over positions [T/2, T)
    fluent_until: dict[str, int]  # label -> last position before the loss leaves the tolerance band
    tolerance: float = 0.10
    probe_r2_in_range: float = float("nan")  # best layer's position probe R² within T (`in_range_probe`)

    def reached_end(self, label: str) -> bool:
        """True when the label stayed fluent over the whole length."""
        return self.fluent_until[label] >= self.length


@dataclass
class LabResult:
    """Every lab model's key figures (rows) and fluency curves; title/description/summary/figures."""

    cells: list[LabCell]
    fluency: list[Fluency]
    train_len: int
    settings: dict[str, Any] = field(default_factory=dict)
    title: str = "Position schemes compared: the lab models"
    description: str = (
        "Four small byte-level models that differ only in their position encoding (RoPE, ALiBi, "
        "partial RoPE, none), trained here at a short training length T, read past it at several "
        "multiples of T, plain and with LM-Infinite. Per scheme: the entropy slope past T, the "
        "logit envelope ratio (beyond / within T), how well a linear probe reads position from the "
        "hidden states, and the loss beyond T relative to the in-range loss (positions T/2..T); "
        "then how far each stays fluent."
    )

    @property
    def labels(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.cells:
            seen.update(dict.fromkeys(c.figures))
        return list(seen)

    def models(self) -> list[str]:
        return list(dict.fromkeys([c.model for c in self.cells] + [f.model for f in self.fluency]))

    def longest(self, model: str) -> LabCell | None:
        cells = [c for c in self.cells if c.model == model]
        return max(cells, key=lambda c: c.multiple) if cells else None

    def summary(self) -> dict[str, dict[str, float]]:
        """"<model> <label>" -> the key figures at the longest multiple, ``fluent_until`` (tokens) and
        ``probe_r2_in_range`` (the model's, the same for every label: within T nothing is patched)."""
        out: dict[str, dict[str, float]] = {}
        fl = {f.model: f for f in self.fluency}
        for model in self.models():
            cell = self.longest(model)
            labels = list(cell.figures) if cell else list(fl[model].nll)
            for lab in labels:
                row = {k: float(cell.figures[lab].get(k, np.nan)) for k, _, _ in FIGURES} if cell else {}
                if cell:
                    row["multiple"] = float(cell.multiple)
                if model in fl and lab in fl[model].fluent_until:
                    row["fluent_until"] = float(fl[model].fluent_until[lab])
                    row["probe_r2_in_range"] = fl[model].probe_r2_in_range
                out[f"{model} {lab}"] = row
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, multiple, label): scheme, length and every key figure."""
        rows = [
            {"model": c.model, "scheme": c.scheme, "multiple": c.multiple, "length": c.length, "label": lab,
             **figs}
            for c in self.cells for lab, figs in c.figures.items()
        ]
        return pd.DataFrame(rows)

    def fluency_frame(self) -> pd.DataFrame:
        """One row per (model, label, bin): bin_end, nll, reference, fluent_until."""
        rows = [
            {"model": f.model, "scheme": f.scheme, "label": lab, "bin_end": int(e), "nll": float(v),
             "reference": f.reference[lab], "fluent_until": f.fluent_until[lab]}
            for f in self.fluency for lab, curve in f.nll.items() for e, v in zip(f.bin_end, curve, strict=True)
        ]
        return pd.DataFrame(rows)

    def findings(self) -> list[str]:
        """Plain-word sentences: per scheme, what happens past T and what the patch changes."""
        from lminf_diag.lab.findings import lab_findings

        return lab_findings(self)

    def figures(self) -> list[Any]:
        """Key figures against the multiple of T; fluency curves; entropy curves at the longest length."""
        from lminf_diag.lab.figures import lab_figures

        return lab_figures(self)
