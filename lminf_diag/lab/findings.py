"""The lab's findings in words, generated from verdicts and intervals only.

Per model and length: which factors are present, absent or inconclusive for the baseline and for
LM-Infinite (the analyzers' own verdicts). Per model: the loss analyzer's own sentences on its long
pass, whether the baseline breaks down past T (with the verdict's interval), and the copy task
(does it use a string d tokens back?). First, what the evidence rests on and its limits.

Example:
    >>> from lminf_diag.lab.result import LabResult
    >>> lab_findings(LabResult(train_len=128))
    []
"""

from __future__ import annotations

from lminf_diag.analyze.estimate import Estimate, Verdict, describe
from lminf_diag.analyze.names import display_name
from lminf_diag.lab.result import BLOCKS, COPY_MARGIN, SCHEME_WORDS, LabResult

FACTOR_WORDS = {
    "logit_explosion": "logit explosion",
    "entropy_growth": "entropy growth",
    "implicit_position": "implicit position",
    "loss_breakdown": "loss breakdown",
}


def _who(result: LabResult, model: str) -> str:
    scheme = result.scheme(model)
    return f"{model} ({SCHEME_WORDS.get(scheme, scheme)}, {BLOCKS.get(scheme, 'its own block')})"


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
    return (
        f"The lab's evidence: {where}, never seen in training. Limits: one training seed per scheme; the "
        "schemes are not in one block class (RoPE is a Llama block, ALiBi a Bloom block, partial and no "
        "rotary GPT-NeoX blocks), so a difference between schemes may come from the block; the models are "
        "small (0.8M parameters, 1000 steps) and near trigram level, so they use little context."
    )


def _verdict_line(verdicts: list[Verdict]) -> str:
    by_label: dict[str, list[str]] = {}
    for v in verdicts:
        by_label.setdefault(v.label, []).append(f"{FACTOR_WORDS.get(v.factor, v.factor)} {v.verdict}")
    return "; ".join(f"{display_name(lab)}: {', '.join(parts)}" for lab, parts in by_label.items())


def _estimate_of(v: Verdict, figures: list[Estimate]) -> Estimate | None:
    """The key figure a verdict was decided from (matched by its figure name and label)."""
    return next((e for e in figures if e.figure == v.figure and e.label == v.label), None)


def _cell_sentences(result: LabResult, model: str) -> list[str]:
    out = []
    for c in [c for c in result.cells if c.model == model]:
        if c.verdicts:
            out.append(
                f"{_who(result, model)} at {c.multiple}x T ({c.length} tokens, {c.windows} windows): "
                f"{_verdict_line(c.verdicts)}."
            )
    return out


def _loss_sentences(result: LabResult, model: str) -> list[str]:
    out = []
    for f in [f for f in result.fluency if f.model == model]:
        at = f"{model}, loss to {f.multiple}x T over {f.windows} windows"
        out += [f"{at}: {line}" for line in f.result.findings()]
        figures = f.result.key_figures()
        for v in f.result.verdicts():
            if v.label != "baseline" or v.factor != "loss_breakdown" or v.verdict != "absent":
                continue  # the loss analyzer's own sentences above say the rest
            e = _estimate_of(v, figures)
            if e is None:
                continue
            out.append(
                describe(
                    v,
                    e,
                    subject=f"{_who(result, model)}, plain,",
                    present="breaks down past T",
                    absent="does not break down past T on this evidence",
                )
            )
    return out


def _copy_sentences(result: LabResult, model: str) -> list[str]:
    out = []
    for c in [c for c in result.copy if c.model == model]:
        est = c.estimates(COPY_MARGIN)
        inside = [(e, w) for e, w, d in est if e.label.endswith(":baseline") and d < c.train_len]
        head = f"{model}, copy task ({c.length} random letters repeated d tokens later, paired against a fresh string)"
        if inside and all(w == "absent" for _, w in inside):
            shown = "; ".join(f"{e.figure} {e.text()}" for e, _ in inside)
            out.append(
                f"{head}: no copy ability even inside T ({shown}; margin {COPY_MARGIN:.2f} nats). "
                "Its fluency says nothing about using far context: it predicts from the last few bytes."
            )
            continue
        for lab in ("baseline", "lambda"):
            rows = [(e, w) for e, w, _ in est if e.label.endswith(f":{lab}")]
            shown = "; ".join(f"{e.figure}: {w} ({e.text()})" for e, w in rows)
            out.append(f"{head}, {display_name(lab)}: uses the string at distance d? {shown}.")
        far = [d for d in c.distances if d > c.n_local]
        if far:
            out.append(
                f"{model}: under LM-Infinite a string more than n_local = {c.n_local} tokens back is out of "
                f"the window, so its gain at d = {far} is near 0 by construction, not a measurement."
            )
    return out


def lab_findings(result: LabResult) -> list[str]:
    """The lab's sentences: limits first, then per model its cells, loss pass and copy task."""
    if not result.models():
        return []
    out: list[str] = [_limits(result)]
    for model in result.models():
        out += (
            _cell_sentences(result, model) + _loss_sentences(result, model) + _copy_sentences(result, model)
        )
    return out


__all__ = ["lab_findings"]
