"""The lab's findings in words, generated from verdicts and intervals only.

Per scheme and length: which factors are present, absent or inconclusive for the baseline and for
LM-Infinite (the seeds' consensus of the analyzers' own verdicts). Per scheme: whether the loss
breaks down past T (with the interval between seeds), "fluent until" per seed, whether the model
uses in-range context at all, and the copy task (does it use a string d tokens back?). First, what
the evidence rests on and its limits.

Example:
    >>> from lminf_diag.lab.result import LabResult
    >>> lab_findings(LabResult(train_len=128))
    []
"""

from __future__ import annotations

import math

from lminf_diag.analyze.estimate import Estimate, Verdict, decide, describe
from lminf_diag.analyze.loss import FLUENT
from lminf_diag.analyze.names import display_name
from lminf_diag.lab.result import BLOCKS, COPY_MARGIN, SCHEME_WORDS, LabResult
from lminf_diag.lab.seeds import CONTEXT_FIGURE, CONTEXT_MARGIN, scheme_of, seeds_by_scheme

FACTOR_WORDS = {
    "logit_explosion": "logit explosion",
    "entropy_growth": "entropy growth",
    "implicit_position": "implicit position",
    "loss_breakdown": "loss breakdown",
}


def _who(result: LabResult, scheme: str, n_seeds: int) -> str:
    kind = result.scheme(scheme)
    seeds = f", {n_seeds} seeds" if n_seeds > 1 else ""
    return f"{scheme} ({SCHEME_WORDS.get(kind, kind)}, {BLOCKS.get(kind, 'its own block')}{seeds})"


def _limits(result: LabResult) -> str:
    k = sorted({c.windows for c in result.cells} | {f.windows for f in result.fluency})
    text = result.settings.get("text", "the held-out book")
    repeated = any(c.repeated for c in result.cells) or any(f.repeated for f in result.fluency)
    where = (
        f"{'/'.join(map(str, k))} windows of the one held-out book ({text}), overlapping in content "
        "(the longer windows repeat the book)"
        if repeated
        else f"{'/'.join(map(str, k))} non-overlapping windows of the one held-out book ({text})"
    )
    seeds = sorted({len(v) for v in seeds_by_scheme(result.models()).values()})
    replication = (
        f"{'/'.join(map(str, seeds))} training seeds per scheme; a scheme's verdict holds only when every "
        "seed's own verdict agrees, and its figures are means over seeds with an interval between seeds"
        if max(seeds) > 1
        else "one training seed per scheme, so a reading may be a property of that run, not of the scheme"
    )
    return (
        f"The lab's evidence: {where}, never seen in training; {replication}. All schemes share one block "
        "(pre-LayerNorm, GELU MLP, sequential residuals: GPT-NeoX with rotary_pct 1, 0.25 or 0, and Bloom "
        "for ALiBi, which adds a LayerNorm on the embeddings). Limits: the models are small (0.8M "
        "parameters, 1000 steps at 128 bytes)."
    )


def _verdict_line(verdicts: list[Verdict]) -> str:
    by_label: dict[str, list[str]] = {}
    for v in verdicts:
        mixed = f" ({v.tests})" if v.tests.startswith("seeds disagree") else ""
        by_label.setdefault(v.label, []).append(f"{FACTOR_WORDS.get(v.factor, v.factor)} {v.verdict}{mixed}")
    return "; ".join(f"{display_name(lab)}: {', '.join(parts)}" for lab, parts in by_label.items())


def _estimate_of(v: Verdict, figures: list[Estimate]) -> Estimate | None:
    """The key figure a verdict was decided from (matched by its figure name and label)."""
    return next((e for e in figures if e.figure == v.figure and e.label == v.label), None)


def _cell_sentences(result: LabResult, scheme: str, n: int, verdicts: list[Verdict]) -> list[str]:
    out = []
    cells = {c.multiple: c for c in result.cells if scheme_of(c.model) == scheme}
    for c in cells.values():  # one line per length, from the consensus
        here = [v for v in verdicts if v.label.startswith(f"{scheme} {c.multiple}xT:")]
        if here:
            out.append(
                f"{_who(result, scheme, n)} at {c.multiple}x T ({c.length} tokens, {c.windows} windows per "
                f"seed): {_verdict_line(here)}."
            )
    return out


def _loss_sentences(result: LabResult, scheme: str, n: int, verdicts: list[Verdict],
                    figures: list[Estimate]) -> list[str]:
    out = []
    fluency = [f for f in result.fluency if scheme_of(f.model) == scheme]
    if not fluency:
        return out
    f0 = fluency[0]
    for v in [v for v in verdicts if v.factor == "loss_breakdown" and v.label.startswith(f"{scheme} {f0.multiple}xT:")]:
        e = _estimate_of(v, figures)
        if e is None:
            continue
        run = v.label.split(":", 1)[1]
        out.append(
            describe(
                v,
                e,
                subject=f"{_who(result, scheme, n)}, {display_name(run)}, loss to {f0.multiple}x T,",
                present="breaks down past T",
                absent="does not break down past T on this evidence",
            )
        )
    per_seed = []
    for f in fluency:
        fl = [e for e in f.result.key_figures() if e.figure == FLUENT and e.label == "baseline"]
        if fl:
            shown = f"≥{fl[0].estimate:.0f}" if fl[0].ci_high == math.inf else f"{fl[0].estimate:.0f}"
            per_seed.append(f"{f.model} {shown}")
    if per_seed:
        out.append(
            f"{scheme}, plain: median 'fluent until' (tokens) per seed: {', '.join(per_seed)} "
            f"(T = {f0.train_len}; ≥ means the window ended first)."
        )
    ctx = next((e for e in figures if e.figure == CONTEXT_FIGURE and e.label == f"{scheme}:baseline"), None)
    if ctx is not None:
        word = decide(ctx, CONTEXT_MARGIN)
        meaning = {
            "present": "its in-range loss keeps falling with context, so it uses more than the last few bytes",
            "absent": "its in-range loss stops falling after T/16: it predicts from the last few bytes, so "
            "its fluency past T says little about using far context",
            "inconclusive": "whether its in-range loss keeps falling with context is inconclusive",
        }[word]
        out.append(f"{_who(result, scheme, n)}: {meaning} ({ctx.figure} {ctx.text()}; margin {CONTEXT_MARGIN}).")
    return out


def _copy_sentences(result: LabResult, scheme: str, figures: list[Estimate]) -> list[str]:
    out = []
    copies = [c for c in result.copy if scheme_of(c.model) == scheme]
    if not copies:
        return out
    c0 = copies[0]
    head = f"{scheme}, copy task ({c0.length} random letters repeated d tokens later, paired against a fresh string)"
    for lab in ("baseline", "lambda"):
        rows = [e for e in figures if e.figure.startswith("copy gain") and e.label == f"{scheme}:{lab}"]
        shown = "; ".join(f"{e.figure}: {decide(e, COPY_MARGIN)} ({e.text()})" for e in rows)
        if shown:
            out.append(f"{head}, {display_name(lab)}: uses the string at distance d? {shown}.")
    far = [d for d in c0.distances if d > c0.n_local]
    if far:
        out.append(
            f"{scheme}: under LM-Infinite a string more than n_local = {c0.n_local} tokens back is out of "
            f"the window, so its gain at d = {far} is near 0 by construction, not a measurement."
        )
    return out


def lab_findings(result: LabResult) -> list[str]:
    """The lab's sentences: limits first, then per scheme its cells, loss pass and copy task."""
    if not result.models():
        return []
    verdicts, figures = result.verdicts(), result.key_figures()
    out: list[str] = [_limits(result)]
    for scheme, models in seeds_by_scheme(result.models()).items():
        n = len(models)
        out += (
            _cell_sentences(result, scheme, n, verdicts)
            + _loss_sentences(result, scheme, n, verdicts, figures)
            + _copy_sentences(result, scheme, figures)
        )
    return out


__all__ = ["lab_findings"]
