"""`MethodsTable`: long-context methods side by side, from what the other results declared.

One row per run label (the baseline and each method), one column per out-of-distribution factor
(the analyzers' own verdict on that label with the interval it was decided from), then the loss
past T against strided re-computation (the loss analyzer's `loss_breakdown` verdict and figure),
passkey retrieval beyond T (Wilson interval) and the cost: decoding latency and KV-cache size at
the longest context measured. Nothing is recomputed here and nothing is read by a figure's
name: verdicts are matched by factor and label, and the estimate behind each is the key figure
the verdict names; passkey and decoding are read from their typed results.

Example:
    >>> from lminf_diag.analyze.base import AnalysisResult
    >>> from lminf_diag.analyze.estimate import Estimate, Verdict
    >>> class R(AnalysisResult):
    ...     def key_figures(self): return [Estimate("excess", "lambda", 0.01, -0.1, 0.1, 4)]
    ...     def verdicts(self): return [Verdict("logit_explosion", "lambda", "absent", "excess", 0.25)]
    >>> t = methods_table({"logits": R(labels=["lambda"])}, ["lambda"])
    >>> t.to_frame().loc[0, "logit explosion"]
    'absent 0.01 [-0.10, 0.10]'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import FACTORS, Estimate, Verdict, proportion

FACTOR_COLUMNS = {
    "logit_explosion": "logit explosion",
    "entropy_growth": "entropy growth",
    "implicit_position": "implicit position",
    "loss_breakdown": "loss past T vs re-computation",
}


@dataclass
class MethodRow:
    """One run label: its verdict per factor (with the estimate), retrieval and cost."""

    label: str
    factors: dict[str, tuple[Verdict, Estimate | None]] = field(default_factory=dict)
    retrieval: Estimate | None = None  # passkey accuracy beyond T
    latency: Estimate | None = None  # ms per decoded token
    kv_mb: float | None = None  # KV cache after decoding, MB
    context: int | None = None  # tokens of context the cost was measured at

    def cell(self, factor: str) -> str:
        """'present 0.75 [0.69, 0.82]', or '-' when no analyzer decided this factor for the label."""
        if factor not in self.factors:
            return "-"
        v, e = self.factors[factor]
        return v.verdict if e is None else f"{v.verdict} {_interval(e)}"


def _interval(e: Estimate) -> str:
    hi = "≥" if e.ci_high == float("inf") else f"{e.ci_high:.2f}"
    if not e.has_interval and hi != "≥":
        return f"{e.estimate:.2f} (n={e.n})"
    return f"{e.estimate:.2f} [{e.ci_low:.2f}, {hi}]"


@dataclass
class MethodsTable(AnalysisResult):
    """The methods × factors table (see the module docstring)."""

    rows: list[MethodRow] = field(default_factory=list)
    title: str = "Methods side by side: which factor each removes, and what it costs"
    description: str = (
        "Each row is one run on the same windows of the same text. Factor columns: the analyzers' verdicts "
        "(present / absent / inconclusive) with the estimate and 95% interval they were decided from, net of "
        "their nulls. Loss past T is read against strided re-computation (each token predicted from its last "
        "T tokens, re-encoded: the in-distribution reference). Retrieval: passkey accuracy on prompts longer "
        "than T (Wilson interval). Cost: decoding latency and KV-cache size at the longest context measured."
    )

    def key_figures(self) -> list[Estimate]:
        """None of its own: every number here is a key figure of another section."""
        return []

    def findings(self) -> list[str]:
        """One sentence per method: what it removes (absent), what remains (present), what is open."""
        from lminf_diag.analyze.names import display_name, sentence_start

        out = []
        for row in self.rows:
            by = {w: [FACTOR_COLUMNS[f] for f, (v, _) in row.factors.items() if v.verdict == w]
                  for w in ("absent", "present", "inconclusive")}
            parts = [f"{w}: {', '.join(names)}" for w, names in by.items() if names]
            if not parts:
                continue
            text = f"{sentence_start(display_name(row.label))}: " + "; ".join(parts)
            if row.retrieval is not None:
                text += f"; passkey beyond T {row.retrieval.text()}"
            out.append(text + ".")
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per method: verdict and interval per factor, retrieval, latency, KV memory."""
        recs = []
        for row in self.rows:
            rec: dict[str, Any] = {"method": row.label}
            rec.update({FACTOR_COLUMNS[f]: row.cell(f) for f in FACTORS})
            rec["passkey beyond T"] = "-" if row.retrieval is None else _interval(row.retrieval)
            rec["ms / token"] = "-" if row.latency is None else f"{row.latency.estimate:.1f}"
            rec["KV MB"] = "-" if row.kv_mb is None else f"{row.kv_mb:.0f}"
            rec["cost at"] = "-" if row.context is None else f"{row.context} tokens"
            recs.append(rec)
        return pd.DataFrame(recs)

    def text(self, width: int = 100) -> str:
        """The table for a terminal: a block per method, one line per column, at most `width` wide."""
        frame = self.to_frame()
        lines = [self.title]
        for _, rec in frame.iterrows():
            lines.append(str(rec["method"]))
            lines += [f"  {col:<32}{str(rec[col])}"[:width] for col in frame.columns if col != "method"]
        return "\n".join(lines)

    def figures(self) -> list[Any]:
        """The table as a plotly Table figure (the report's first section)."""
        import plotly.graph_objects as go

        frame = self.to_frame()
        if frame.empty:
            return []
        fig = go.Figure(go.Table(
            header={"values": list(frame.columns), "align": "left"},
            cells={"values": [frame[c].tolist() for c in frame.columns], "align": "left"},
        ))
        fig.update_layout(title=self.title, height=120 + 40 * len(frame), margin={"l": 10, "r": 10, "t": 50, "b": 10})
        return [fig]


def methods_table(results: dict[str, AnalysisResult], labels: list[str]) -> MethodsTable:
    """The table of `labels` from the results of one run (analyzers, passkey, decoding)."""
    from lminf_diag.evaluate.decoding import DecodingResult
    from lminf_diag.evaluate.passkey_result import PasskeyResult

    verdicts = [v for r in results.values() for v in r.verdicts()]
    figures = {(e.figure, e.label): e for r in results.values() for e in r.key_figures()}
    rows = []
    for lab in labels:
        row = MethodRow(lab)
        for v in verdicts:
            if v.label == lab and v.factor in FACTORS and v.factor not in row.factors:
                row.factors[v.factor] = (v, figures.get((v.figure, v.label)))
        for r in results.values():
            if isinstance(r, PasskeyResult) and lab in r.labels:
                _, (k, n) = r.within_beyond(lab)
                row.retrieval = proportion(k, n, figure="passkey accuracy beyond T", label=lab) if n else None
            if isinstance(r, DecodingResult) and r.runs.get(lab):
                last = max(r.runs[lab], key=lambda run: run.prefill_tokens)
                row.latency = next((e for e in r.key_figures() if e.label == lab and e.unit == "ms per token"), None)
                row.kv_mb = float(last.cache_mb[-1]) if len(last.cache_mb) else None
                row.context = int(last.context[-1]) if len(last.context) else last.prefill_tokens
        rows.append(row)
    return MethodsTable(labels=list(labels), rows=rows)


__all__ = ["FACTOR_COLUMNS", "MethodRow", "MethodsTable", "methods_table"]
