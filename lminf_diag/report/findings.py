"""The summary of findings in plain words, generated from the key figures.

One sentence per known result kind (entropy, logits, positions, perplexity), comparing the
baseline with each patched run; numbers that are undefined (NaN) are left out of the text.

Example:
    >>> from tests.synthetic import make_comparison
    >>> from lminf_diag.analyze import analyze_all
    >>> lines = findings(analyze_all(make_comparison(n=256, train_len=64)))
    >>> lines[2]
    "Past the training length (64 tokens) the baseline's attention entropy keeps growing (slope 1.00 nats per ln n) while LM-Infinite holds it flat (0.00)."
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from lminf_diag.report.keyfigures import kind_of, safe_summary

NAMES = {
    "baseline": "the baseline",
    "lambda": "LM-Infinite",
    "mask_only": "the Λ-mask alone",
    "cap_only": "the distance cap alone",
    "window": "a plain sliding window",
}
FLAT = 0.1  # an entropy slope below this (nats per ln n) reads as "flat"


def display_name(label: str) -> str:
    """How a run label reads in a sentence.

    >>> display_name("lambda"), display_name("run-a:lambda"), display_name("custom")
    ('LM-Infinite', 'LM-Infinite (run-a)', 'custom')
    """
    prefix, _, base = label.rpartition(":")
    if base not in NAMES:
        return label
    return f"{NAMES[base]} ({prefix})" if prefix else NAMES[base]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ok(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _split(summary: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    labels = list(summary)
    base = next((lab for lab in labels if lab == "baseline" or lab.endswith(":baseline")), None)
    return base, [lab for lab in labels if lab != base]


def _train(result: Any) -> str:
    tl = getattr(result, "train_len", None)
    return f" ({int(tl)} tokens)" if tl else ""


def _entropy(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    if base is None or not _ok(s[base].get("slope_beyond")):
        ref = base or (others[0] if others else None)
        within = s.get(ref, {}).get("slope_within") if ref else None
        if ref and _ok(within):
            return (
                f"The window does not reach past the training length{_train(result)}, so only the entropy "
                f"growth within it is measured: {display_name(ref)} gains {within:.2f} nats per ln n."
            )
        return None
    b = s[base]["slope_beyond"]
    grows = "keeps growing" if b >= FLAT else "stays nearly flat"
    text = f"Past the training length{_train(result)} {display_name(base)}'s attention entropy {grows} (slope {b:.2f} nats per ln n)"
    parts = []
    for lab in others:
        p = s[lab].get("slope_beyond")
        if not _ok(p):
            continue
        if abs(p) < FLAT:
            parts.append(f"{display_name(lab)} holds it flat ({p:.2f})")
        elif abs(p) <= 0.5 * abs(b):
            parts.append(f"{display_name(lab)} slows it ({p:.2f})")
        else:
            parts.append(f"{display_name(lab)} does not hold it down ({p:.2f})")
    return text + (" while " + "; ".join(parts) if parts else "") + "."


def _logits(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    if base is None or not _ok(s[base].get("excess")):
        return None
    e, r = s[base]["excess"], s[base].get("envelope_ratio")
    ratio = f" (envelope ratio {r:.2f})" if _ok(r) else ""
    text = (
        f"At distances beyond the training length{_train(result)} {display_name(base)}'s largest attention "
        f"logits exceed those seen within it by {e:.2f}{ratio}"
    )
    parts = [
        f"under {display_name(lab)} it is {s[lab]['excess']:.2f}"
        for lab in others
        if _ok(s[lab].get("excess"))
    ]
    return text + ("; " + "; ".join(parts) if parts else "") + "."


def _positions(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    ref = base or (others[0] if others else None)
    if ref is None or not _ok(s[ref].get("probe_r2")):
        return None
    r2, d = s[ref]["probe_r2"], s[ref].get("first_token_distance")
    first = f"; the first tokens sit {d:.1f} spreads away from the rest" if _ok(d) else ""
    if r2 >= 0.5:
        return (
            f"A linear probe reads the token position off {display_name(ref)}'s hidden states (R² = {r2:.2f}): "
            f"implicit absolute position, although the model has no position embeddings{first}."
        )
    return f"A linear probe reads little of the token position off {display_name(ref)}'s hidden states (R² = {r2:.2f}){first}."


def _perplexity(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    if base is None or not _ok(s[base].get("nll_beyond")):
        return None
    text = f"{_cap(display_name(base))}'s mean loss beyond the training length{_train(result)} is {s[base]['nll_beyond']:.2f} nats"
    parts = [
        f"{s[lab]['nll_beyond']:.2f} with {display_name(lab)}"
        for lab in others
        if _ok(s[lab].get("nll_beyond"))
    ]
    within = s[base].get("nll_within")
    tail = f" (within it: {within:.2f})" if _ok(within) else ""
    return text + (" vs " + ", ".join(parts) if parts else "") + tail + "."


def _rank(kind: str | None) -> int:
    return ORDER.index(kind) if kind in ORDER else len(ORDER)


_WRITERS: dict[str, Callable[..., str | None]] = {
    "logits": _logits,
    "entropy": _entropy,
    "positions": _positions,
    "perplexity": _perplexity,
}


ORDER = ("perplexity", "logits", "entropy", "positions")  # the outcome first, then the paper's factors


def _short_window(results: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    length = meta.get("length")
    tl = meta.get("train_len") or next(
        (r.train_len for r in results.values() if getattr(r, "train_len", None)), None
    )
    if isinstance(length, int) and isinstance(tl, int) and 0 < length <= tl:
        return (
            f"The window ({length} tokens) does not go past the training length ({tl} tokens), so nothing here "
            "shows the breakdown, and LM-Infinite with its default window changes nothing; run with a length "
            f"above {tl} (--length, with --repeat for a short text)."
        )
    return None


def findings(results: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> list[str]:
    """Plain-word sentences for the results whose kind is known (others contribute none).

    Sentences follow ORDER: the loss first, then logits, entropy and positions. With `meta`
    holding "length" (and "train_len"), a window within the training length is pointed out first.
    """
    note = _short_window(results, meta or {})
    out = [note] if note else []
    for result in sorted(results.values(), key=lambda r: _rank(kind_of(safe_summary(r)))):
        s = safe_summary(result)
        kind = kind_of(s)
        if kind is None:
            continue
        base, others = _split(s)
        sentence = _WRITERS[kind](result, s, base, others)
        if sentence:
            out.append(sentence)
    return out
