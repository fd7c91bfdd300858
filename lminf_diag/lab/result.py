"""`LabResult`: what the analyzers declared for every lab model, over K windows, and the copy task.

The lab stores results *generically*: for each (model, multiple of T) cell it keeps the key
figures (`Estimate`s with intervals between windows), verdicts and findings that
`analyze.analyze_all` returned, without reading any figure by name. Labels are prefixed with the
model and the length, "lab-rope 32xT:baseline", so every figure and verdict of every model fits
one table (`analyze.names.display_name` reads the prefix). `LabFluency` holds each model's
per-token loss over K windows to a longer length and the loss analyzer's result on it; `CopyCell`
(`lab.copy_task`) whether the model uses a string seen d tokens back.

Example:
    >>> from lminf_diag.analyze.estimate import Estimate, Verdict
    >>> e = Estimate("NLL past T", "baseline", 2.5, 2.4, 2.6, 16, "nats")
    >>> cell = LabCell("lab-x", "rope", 8, 1024, 16, [("perplexity", e)],
    ...                [Verdict("loss_breakdown", "baseline", "present", "NLL past T")], [])
    >>> r = LabResult(cells=[cell], train_len=128)
    >>> [(k.label, k.n) for k in r.key_figures()], [(v.label, v.verdict) for v in r.verdicts()]
    ([('lab-x 8xT:baseline', 16)], [('lab-x 8xT:baseline', 'present')])
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import Estimate, Verdict
from lminf_diag.lab.copy_task import CopyCell

SCHEME_WORDS = {
    "rope": "RoPE",
    "alibi": "ALiBi",
    "rope_partial": "partial RoPE",
    "none": "no position encoding",
}
BLOCKS = {
    "rope": "GPT-NeoX",
    "alibi": "Bloom, the same block",
    "rope_partial": "GPT-NeoX",
    "none": "GPT-NeoX",
}
COPY_MARGIN = 0.1  # nats per token: a copy gain below this is "no use of the string at distance d"


def lab_label(model: str, multiple: int | None, label: str) -> str:
    """The label of a lab figure or verdict: model (and length) before the run label.

    >>> lab_label("lab-rope", 32, "baseline"), lab_label("lab-rope", None, "lambda")
    ('lab-rope 32xT:baseline', 'lab-rope:lambda')
    """
    prefix = model if multiple is None else f"{model} {multiple}xT"
    return f"{prefix}:{label}"


@dataclass
class LabCell:
    """One model at one length over K windows: the analyzers' declared figures, verdicts, findings."""

    model: str
    scheme: str
    multiple: int  # length / training length
    length: int
    windows: int
    key_figures: list[tuple[str, Estimate]]  # (analyzer section, estimate) in declared order
    verdicts: list[Verdict]
    findings: list[str]
    repeated: bool = False  # some windows repeat the text (overlapping in content)

    def to_record(self) -> dict[str, Any]:
        """JSON form (a run folder's cell)."""
        return {
            "key_figures": [{"section": s, **e.to_dict()} for s, e in self.key_figures],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "findings": list(self.findings),
            "windows": self.windows,
            "repeated": self.repeated,
        }

    @classmethod
    def from_record(cls, model: str, scheme: str, multiple: int, length: int, rec: dict[str, Any]) -> LabCell:
        """Inverse of `to_record` (None in JSON reads back as NaN)."""
        figs = []
        for r in rec["key_figures"]:
            r = {
                k: (float("nan") if v is None and k in ("estimate", "ci_low", "ci_high") else v)
                for k, v in r.items()
            }
            section = r.pop("section", "")
            figs.append((section, Estimate(**{k: v for k, v in r.items() if k != "values"})))
        verdicts = [
            Verdict(**{k: (float("nan") if v is None and k == "margin" else v) for k, v in d.items()})
            for d in rec["verdicts"]
        ]
        return cls(
            model,
            scheme,
            multiple,
            length,
            int(rec["windows"]),
            figs,
            verdicts,
            list(rec["findings"]),
            bool(rec.get("repeated", False)),
        )


@dataclass
class LabFluency:
    """One model's per-token loss over K windows to `length`, and the loss analyzer's result on it."""

    model: str
    scheme: str
    train_len: int
    multiple: int
    nll: dict[str, np.ndarray]  # label -> (K, N) per-token NLL, NaN at position 0
    result: Any  # the loss analyzer's result (`analyze.perplexity_by_position`)
    repeated: bool = False
    short: np.ndarray | None = None  # (K, N) baseline loss at T/2..T from the last T/16 tokens only

    @property
    def windows(self) -> int:
        return int(next(iter(self.nll.values())).shape[0])


@dataclass
class LabResult(AnalysisResult):
    """Every lab model's cells, loss passes and copy task; key figures, verdicts and findings."""

    cells: list[LabCell] = field(default_factory=list)
    fluency: list[LabFluency] = field(default_factory=list)
    copy: list[CopyCell] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    title: str = "Position schemes compared: the lab models"
    description: str = (
        "Small byte-level models, one per position scheme (RoPE, ALiBi, partial RoPE, none), each trained "
        "with several seeds by this toolkit at T = 128 bytes in one block (pre-LayerNorm, GELU MLP; GPT-NeoX, "
        "and Bloom for ALiBi), read on a book they never saw, plain and with LM-Infinite (n_local = T). "
        "Each seed's figure is a mean over K windows; a scheme's figure is the mean over its seeds with an "
        "interval between seeds, and its verdict holds only when every seed agrees. Labels read "
        "'scheme length:run'. Limits: the models are small (0.8M parameters, 1000 steps)."
    )

    def __repr__(self) -> str:
        """One line: models, lengths, cells and how many verdicts read present, absent, inconclusive.

        >>> LabResult(train_len=128)
        <LabResult models=[] T=128 lengths=[] cells=0>
        """
        verdicts = [v.verdict for v in self.verdicts()] if self.cells or self.fluency or self.copy else []
        counts = ", ".join(f"{verdicts.count(k)} {k}" for k in ("present", "absent", "inconclusive") if k in verdicts)
        lengths = sorted({int(c.length) for c in self.cells})
        line = f"<LabResult models={self.models()!r} T={self.train_len} lengths={lengths} cells={len(self.cells)}"
        line += f"; verdicts: {counts}" if counts else ""
        return (line if len(line) < 279 else line[:276] + "...") + ">"

    def models(self) -> list[str]:
        """Model names in the order they ran."""
        names = [c.model for c in self.cells] + [f.model for f in self.fluency] + [c.model for c in self.copy]
        return list(dict.fromkeys(names))

    def scheme(self, model: str) -> str:
        for item in [*self.cells, *self.fluency, *self.copy]:
            if item.model == model:
                return item.scheme
        return ""

    def key_figures(self) -> list[Estimate]:
        """Per scheme, the mean over its seeds of every per-seed figure, with an interval between seeds."""
        from lminf_diag.lab.seeds import across_seeds

        return across_seeds(self.per_seed_figures())

    def verdicts(self) -> list[Verdict]:
        """Per scheme, the seeds' consensus: a verdict holds only when every seed reached it."""
        from lminf_diag.lab.seeds import consensus

        return consensus(self.per_seed_verdicts())

    def per_seed_figures(self) -> list[Estimate]:
        """Every cell's declared figures, then the loss passes' and context gains, then the copy gains."""
        from lminf_diag.lab.seeds import context_gain

        out = [
            replace(e, label=lab_label(c.model, c.multiple, e.label))
            for c in self.cells
            for _, e in c.key_figures
        ]
        for f in self.fluency:
            out += [replace(e, label=lab_label(f.model, f.multiple, e.label)) for e in f.result.key_figures()]
            if "baseline" in f.nll and f.short is not None:
                out.append(context_gain(f.nll["baseline"], f.short, f.train_len,
                                        lab_label(f.model, None, "baseline")))
        for c in self.copy:
            out += [e for e, _, _ in c.estimates(COPY_MARGIN)]
        return out

    def per_seed_verdicts(self) -> list[Verdict]:
        """The analyzers' verdicts per model and length (labels prefixed), then the loss passes'."""
        out = [
            replace(v, label=lab_label(c.model, c.multiple, v.label)) for c in self.cells for v in c.verdicts
        ]
        for f in self.fluency:
            out += [replace(v, label=lab_label(f.model, f.multiple, v.label)) for v in f.result.verdicts()]
        return out

    def findings(self) -> list[str]:
        """Sentences from the verdicts and intervals: per scheme what is present or absent (`lab.findings`)."""
        from lminf_diag.lab.findings import lab_findings

        return lab_findings(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per key figure: model, scheme, part (cell / loss pass / copy), multiple, the estimate."""
        rows = []
        for c in self.cells:
            for section, e in c.key_figures:
                rows.append(
                    {
                        "model": c.model,
                        "scheme": c.scheme,
                        "part": section,
                        "multiple": c.multiple,
                        **e.to_dict(),
                    }
                )
        for f in self.fluency:
            for e in f.result.key_figures():
                rows.append(
                    {
                        "model": f.model,
                        "scheme": f.scheme,
                        "part": "loss pass",
                        "multiple": f.multiple,
                        **e.to_dict(),
                    }
                )
        for c in self.copy:
            for e, word, _ in c.estimates(COPY_MARGIN):
                rows.append(
                    {
                        "model": c.model,
                        "scheme": c.scheme,
                        "part": "copy task",
                        "multiple": None,
                        **e.to_dict(),
                        "label": e.label.split(":", 1)[1],
                        "copy": word,
                    }
                )
        return pd.DataFrame(rows)

    def figures(self) -> list[Any]:
        """Verdict map, loss against position, copy gain against distance (`lab.figures`)."""
        from lminf_diag.lab.figures import lab_figures

        return lab_figures(self)


__all__ = ["BLOCKS", "COPY_MARGIN", "SCHEME_WORDS", "LabCell", "LabFluency", "LabResult", "lab_label"]
