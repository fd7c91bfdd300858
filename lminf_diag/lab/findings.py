"""The lab's findings in plain words: per scheme, the breakdown past T and what LM-Infinite changes.

Example:
    >>> from lminf_diag.lab.result import LabResult
    >>> lab_findings(LabResult(cells=[], fluency=[], train_len=128))
    []
"""

from __future__ import annotations

import math

from lminf_diag.lab.result import SCHEME_WORDS, LabResult


def _num(x: float, digits: int = 2) -> str | None:
    return f"{x:.{digits}f}" if x is not None and math.isfinite(x) else None


def _fluent(f, label: str) -> str:
    until = f.fluent_until[label]
    if f.reached_end(label):
        return f"to the end ({f.length} tokens, {f.length // f.train_len}x T)"
    return f"to {until} tokens ({until / f.train_len:.3g}x T)"


def lab_findings(result: LabResult) -> list[str]:
    """One sentence per lab model."""
    out = []
    fluency = {f.model: f for f in result.fluency}
    for model in result.models():
        cell = result.longest(model)
        f = fluency.get(model)
        scheme = cell.scheme if cell else f.scheme
        bits = []
        if cell and "baseline" in cell.figures:
            b = cell.figures["baseline"]
            p = cell.figures.get("lambda", {})
            at = f"at {cell.multiple}x T"
            ratio, pratio = _num(b.get("nll_ratio")), _num(p.get("nll_ratio", float("nan")))
            if ratio:
                bits.append(f"{at} its loss beyond T is {ratio}x its in-range loss" +
                            (f" ({pratio}x with LM-Infinite)" if pratio else ""))
            slope, pslope = _num(b.get("entropy_slope_beyond")), _num(p.get("entropy_slope_beyond", float("nan")))
            if slope:
                bits.append(f"entropy slope past T {slope} nats per ln n" + (f" ({pslope} patched)" if pslope else ""))
            r2 = _num(b.get("position_probe_r2"))
            if r2:
                bits.append(f"position probe R² {r2} over the whole window")
        if f and math.isfinite(f.probe_r2_in_range):
            bits.append(f"within T a linear probe reads position from its hidden states with R² "
                        f"{f.probe_r2_in_range:.2f}")
        if f and "baseline" in f.fluent_until:
            text = f"plain it stays within {f.tolerance:.0%} of its in-range loss {_fluent(f, 'baseline')}"
            if "lambda" in f.fluent_until:
                text += f", with LM-Infinite {_fluent(f, 'lambda')}"
            bits.append(text)
        if bits:
            out.append(f"{model} ({SCHEME_WORDS.get(scheme, scheme)}): " + "; ".join(bits) + ".")
    return out
