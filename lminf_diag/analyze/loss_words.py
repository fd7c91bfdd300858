"""The sentences of a `LossResult`, each generated from a verdict or an interval (never a bare estimate).

Example:
    >>> import numpy as np
    >>> from lminf_diag.analyze.loss import LossResult
    >>> rng = np.random.default_rng(0)
    >>> flat = 2.0 + rng.normal(0, 0.05, (4, 256))
    >>> r = LossResult(train_len=64, nll={"baseline": flat})
    >>> loss_findings(r)[0].startswith("Past T, the baseline holds its loss")
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lminf_diag.analyze.estimate import Estimate, decide, describe
from lminf_diag.analyze.loss import (
    CLASSICS,
    GAP,
    NET_REF,
    RECOMPUTE,
    is_control,
    original_of,
    reference_of,
    spoken,
)
from lminf_diag.analyze.names import sentence_start

if TYPE_CHECKING:
    from lminf_diag.analyze.loss import LossResult


def _pos(value: float, train_len: int) -> str:
    return f"{int(value)} tokens ({value / train_len:.2f} T)"


def fluent_text(e: Estimate, train_len: int) -> str:
    """'≥ 2048 tokens (2.00 T), median over 4 windows, interval 1024 tokens (1.00 T) to ≥ (censored; ...)'.

    >>> from lminf_diag.analyze.fluency import censored_median
    >>> fluent_text(censored_median([64, 96, 128, 128], [False, False, True, True]), 32)[:40]
    '≥ 112 tokens (3.50 T), median over 4 win'
    """
    if e.n == 0 or not math.isfinite(e.estimate):
        return "n/a"
    head = ("≥ " if "lower bound" in e.method else "") + _pos(e.estimate, train_len)
    head += f", median over {e.n} window(s)"
    if not math.isfinite(e.ci_low):
        return head + " (no interval)"
    hi = "≥ the end of a censored window" if math.isinf(e.ci_high) else _pos(e.ci_high, train_len)
    coverage = e.method.split("(")[1].split(")")[0] if "(" in e.method else ""
    return f"{head}, interval {_pos(e.ci_low, train_len)} to {hi} ({coverage})"


def _verdict_sentences(r: LossResult) -> list[str]:
    out = []
    for v in r.verdicts():
        net = r.net(v.label)
        if net.n == 0:
            out.append(f"Past T, {spoken(v.label)}: inconclusive (no position past T was computed).")
            continue
        ref = (
            "the in-distribution loss of the same tokens"
            if net.figure == NET_REF
            else "its in-range loss (T/2..T)"
        )
        out.append(
            describe(
                v,
                net,
                subject=f"Past T, {spoken(v.label)}",
                present=f"breaks down (its loss rises above {ref} by more than the margin)",
                absent=f"holds its loss (within the margin of {ref})",
            )
        )
    return out


def _against(r: LossResult, label: str) -> str:
    ref = reference_of(label)
    return "the reference's loss on the same tokens" if ref in r.nll and ref != label else "its in-range loss"


def _fluency_sentences(r: LossResult) -> list[str]:
    out = []
    tl = int(r.train_len)
    for lab in r.run_labels():
        e = r.estimates(lab)
        fl, to_end = e["fluent"], e["to_end"]
        if fl.n == 0:
            continue
        k = round(to_end.estimate * to_end.n) if to_end.n else 0
        if k == to_end.n:  # every window censored: no crossing anywhere
            low = min(v for v in fl.values if math.isfinite(v))
            out.append(
                f"{sentence_start(spoken(lab))} never leaves {r.tolerance:.0%} of {_against(r, lab)} for "
                f"{r.sustain} log bins in any of {k} window(s): fluent to at least {_pos(low, tl)} "
                "(censored, ≥ the end of each window)."
            )
            continue
        out.append(
            f"{sentence_start(spoken(lab))} stays within {r.tolerance:.0%} of {_against(r, lab)} "
            f"(a crossing must last {r.sustain} log bins) until {fluent_text(fl, tl)}; "
            f"{k} of {to_end.n} window(s) never leave "
            "that band (censored, ≥ the end)."
        )
    return out


def _reference_sentence(r: LossResult) -> list[str]:
    if RECOMPUTE not in r.nll:
        return []
    rise = r.estimates(RECOMPUTE)["rise"]
    cost = f" It cost {r.costs[RECOMPUTE]}." if RECOMPUTE in r.costs else ""
    return [
        f"On the recomputed reference (every token from its last T tokens, in distribution by construction), "
        f"NLL past T minus in range is {rise.text()}: the content drift between the two ranges of these "
        f"windows (a bare past-versus-in-range comparison counts it as breakdown).{cost}"
    ]


def _control_sentences(r: LossResult) -> list[str]:
    controls = [lab for lab in r.labels if is_control(lab) and original_of(lab) in r.nll]
    if not controls:
        return (
            [CLASSICS]
            if r.from_books
            else [
                "No contamination control was run: if the text is in the model's training data, "
                "its losses read low from memory (rerun with a paragraph-shuffled control, "
                "`diag ppl --control shuffled`)."
            ]
        )
    out = []
    for lab in controls:
        gap = r.control_gap(lab)
        if gap is None:
            continue
        word = decide(gap, r.margin)
        name = spoken(original_of(lab))
        figure = f"{GAP} {gap.text()} against a margin of {r.margin:.2f}"
        if word == "present":
            out.append(
                f"Contamination control: the original text's in-range loss under {name} is lower than its "
                f"paragraph-shuffled copy's ({figure}); the model may have memorised the text (or uses "
                "its paragraph order), so absolute losses on it read low."
            )
        elif word == "absent":
            out.append(
                f"Contamination control: under {name} the paragraph-shuffled copy's in-range loss is not above "
                f"the original's by more than the margin ({figure}); no sign that a memorised text drives these "
                "losses."
            )
        else:
            why = "only one window" if not gap.has_interval else "the interval straddles the margin"
            out.append(f"Contamination control under {name}: inconclusive ({why}; {figure}).")
        if r.from_books:
            out[-1] += " The bundled books are classics and likely in the training data."
    return out


def loss_findings(r: LossResult) -> list[str]:
    """Verdict sentences, then fluent-until intervals, the reference's drift and the contamination control."""
    return _verdict_sentences(r) + _fluency_sentences(r) + _reference_sentence(r) + _control_sentences(r)


__all__ = ["fluent_text", "loss_findings"]
