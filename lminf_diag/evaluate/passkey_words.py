"""The findings of a passkey run, in words chosen from Wilson intervals only (never from a bare rate).

Per label: how many needles it retrieves within and beyond T. Per patched label, over the
prompts longer than n_local, whether its accuracy depends on the needle lying inside its Λ:

    separated    the inside interval lies wholly above the outside one
    beyond       the outside interval excludes 0 (at least one needle retrieved from outside;
                 guessing a 5-digit key succeeds about once in 90,000)
    in line      the interval of the accuracy past n_local overlaps that of the share of needles
                 inside the Λ (the geometric expectation); "below" / "above" when it does not

Example:
    >>> from lminf_diag.evaluate.passkey_result import PasskeyResult, PasskeyTrial
    >>> rec = [PasskeyTrial("lambda", 2048, 0.5, t, 1, "", t < 12, 2040, 0.5, 10, 20, t < 12, t < 12)
    ...        for t in range(20)]
    >>> res = PasskeyResult(labels=["lambda"], train_len=1024, records=rec, lengths=[2048], n_global=4,
    ...                     n_local=1024)
    >>> print(passkey_findings(res)[1])  # doctest: +NORMALIZE_WHITESPACE
    LM-Infinite retrieves 12/12 needles inside the Λ (Wilson 0.76-1.00) and 0/8 outside (Wilson 0.00-0.32):
    its accuracy is the share of needles inside the window (12/20, Wilson 0.39-0.78), not retrieval
    from beyond it.
"""

from __future__ import annotations

from typing import Any

from lminf_diag.analyze.estimate import Estimate, proportion
from lminf_diag.analyze.names import display_name, sentence_start


def wilson_text(e: Estimate) -> str:
    """'Wilson 0.00-0.32' (or 'no prompt' when n = 0).

    >>> wilson_text(proportion(0, 8))
    'Wilson 0.00-0.32'
    """
    return f"Wilson {e.ci_low:.2f}-{e.ci_high:.2f}" if e.n else "no prompt"


def _count(k: int, n: int) -> str:
    return f"{k}/{n}"


def overlap_word(a: Estimate, b: Estimate) -> str:
    """'in line with' when the intervals overlap, else 'below' or 'above' (a against b).

    >>> overlap_word(proportion(5, 10), proportion(6, 10)), overlap_word(proportion(0, 50), proportion(40, 50))
    ('in line with', 'below')
    """
    if a.ci_high < b.ci_low:
        return "below"
    if a.ci_low > b.ci_high:
        return "above"
    return "in line with"


def length_sentence(result: Any, label: str) -> str | None:
    """'<Name> retrieves k/n needles within the training length (T tokens; Wilson ..) and k/n beyond it (..).'"""
    (kw, nw), (kb, nb) = result.within_beyond(label)
    name = sentence_start(display_name(label))
    within, beyond = proportion(kw, nw), proportion(kb, nb)
    tl = result.train_len
    if nw and nb:
        return (
            f"{name} retrieves {_count(kw, nw)} needles within the training length ({tl} tokens; "
            f"{wilson_text(within)}) and {_count(kb, nb)} beyond it ({wilson_text(beyond)})."
        )
    if nb:
        return f"{name} retrieves {_count(kb, nb)} needles beyond the training length ({tl} tokens; {wilson_text(beyond)})."
    if nw:
        where = f"within the training length ({tl} tokens; " if tl else "("
        return f"{name} retrieves {_count(kw, nw)} needles {where}{wilson_text(within)})."
    return None


def lambda_sentence(result: Any, label: str) -> str | None:
    """Whether `label`'s accuracy past n_local depends on the needle lying inside its Λ (module docstring)."""
    if label == "baseline" or not result.flags(label):
        return None
    c = result.conditional(label)
    (ki, ni), (ko, no), (ka, na) = c["inside"], c["outside"], c["all"]
    ins, outs = proportion(ki, ni), proportion(ko, no)
    past, share = proportion(ka, na), proportion(*c["share_inside"])
    name = sentence_start(display_name(label))
    head = (
        f"{name} retrieves {_count(ki, ni)} needles inside the Λ ({wilson_text(ins)}) and "
        f"{_count(ko, no)} outside ({wilson_text(outs)})"
    )
    geom = f"{_count(*c['share_inside'])}, {wilson_text(share)}"
    if no == 0 or ni == 0:
        where = "inside" if no == 0 else "outside"
        return (
            f"{head}: every needle of the {na} prompts longer than n_local ({result.n_local}) lay {where} the Λ, "
            "so these prompts cannot tell whether retrieval depends on it."
        )
    separated = ins.ci_low > outs.ci_high
    beyond = ko > 0  # the Wilson lower bound is > 0 exactly when ko > 0 (rounding can leave 1e-17 at ko = 0)
    rel = overlap_word(past, share)
    if separated and not beyond and rel == "in line with":
        return (
            f"{head}: its accuracy is the share of needles inside the window ({geom}), "
            "not retrieval from beyond it."
        )
    if separated and not beyond:
        return (
            f"{head}: it retrieves no needle from beyond the window, and its accuracy past n_local "
            f"({_count(ka, na)}, {wilson_text(past)}) lies {rel} the share of needles inside the window ({geom})."
        )
    if separated:
        return (
            f"{head}: it retrieves some needles from beyond the window, fewer than from inside it "
            f"(share of needles inside the window: {geom})."
        )
    if beyond:
        return (
            f"{head}: the intervals overlap, so these prompts show no dependence of retrieval on the Λ; "
            f"it retrieves needles from beyond the window (share inside: {geom})."
        )
    return (
        f"{head}: inconclusive (the intervals overlap); more prompts would tell whether retrieval "
        "depends on the Λ."
    )


def passkey_findings(result: Any) -> list[str]:
    """Every label's length sentence, then every patched label's Λ sentence."""
    lines = [length_sentence(result, lab) for lab in result.labels]
    lines += [lambda_sentence(result, lab) for lab in result.labels]
    return [line for line in lines if line]


__all__ = ["lambda_sentence", "length_sentence", "overlap_word", "passkey_findings", "wilson_text"]
