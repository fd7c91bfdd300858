"""The summary of findings in plain words, generated from the key figures.

One sentence per known result kind (entropy, logits, positions, perplexity; passkey retrieval,
loss over documents, decoding), comparing the baseline with each patched run; numbers that are
undefined (NaN) are left out of the text, and counts and token lengths read as integers.

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
    >>> display_name("lambda+top5")
    'LM-Infinite + top-5 middle tokens'
    """
    prefix, _, base = label.rpartition(":")
    mode, plus, top = base.partition("+top")
    if plus and mode in NAMES and top.isdigit():  # the top-k middle-token run of `diag passkey --top-k`
        name = f"{NAMES[mode]} + top-{int(top)} middle tokens"
    elif base in NAMES:
        name = NAMES[base]
    else:
        return label
    return f"{name} ({prefix})" if prefix else name


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


def _bare(label: str) -> str:
    """A label as it reads at the head of a list item: "baseline", "LM-Infinite", ..."""
    name = display_name(label)
    return name[4:] if name.startswith("the ") else name


def _int(value: float) -> int:
    return int(round(value))


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _short(value: float) -> str:
    """A measurement with about three significant digits and no exponent: 1234, 12.3, 1.23, 0.016."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def _a(number: str) -> str:
    """The indefinite article before a number as read aloud: "an 8.25", "an 11", "a 12", "a 110".

    >>> [_a(n) for n in ("8.25", "11", "18000", "12", "110", "0.5")]
    ['an', 'an', 'an', 'a', 'a', 'a']
    """
    whole = number.split(".")[0].lstrip("-")
    eleven = len(whole) % 3 == 2 and whole[:2] in ("11", "18")
    return "an" if number.startswith("8") or eleven else "a"


def _passkey_counts(result: Any, label: str, beyond: bool) -> tuple[int, int] | None:
    """(correct, prompts) of `label` beyond (or within) the training length, from the result's records."""
    try:
        frame = result.to_frame()
    except Exception:  # a result without records: percentages only
        return None
    if not {"mode", "length", "correct"} <= set(getattr(frame, "columns", ())):
        return None
    rows = frame[frame["mode"] == label]
    tl = getattr(result, "train_len", None)
    if tl is None:
        part = rows if not beyond else rows.iloc[:0]
    else:
        part = rows[(rows["length"] > tl) if beyond else (rows["length"] <= tl)]
    return int(part["correct"].astype(bool).sum()), len(part)


def _passkey(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    labels = [lab for lab in [base, *others] if lab is not None]
    beyond = any(_ok(s[lab].get("accuracy_beyond")) for lab in labels)
    key = "accuracy_beyond" if beyond else "accuracy_within"
    parts = []
    for lab in labels:
        acc = s[lab].get(key)
        if not _ok(acc):
            continue
        counts = _passkey_counts(result, lab, beyond)
        if counts is None and not _ok(s[lab].get("accuracy_within" if beyond else "accuracy_beyond")):
            n = s[lab].get("n_prompts")  # every prompt is on this side of the training length
            counts = (_int(acc * n), _int(n)) if _ok(n) else None
        correct = " correct" if not parts else ""
        if counts and counts[1]:
            parts.append(f"{_bare(lab)} {counts[0]}/{counts[1]}{correct} ({_pct(acc)})")
        else:
            parts.append(f"{_bare(lab)} {_pct(acc)}{correct}")
    if not parts:
        return None
    where = "beyond" if beyond else "within"
    text = f"Passkey retrieval {where} the training length{_train(result)}: " + ", ".join(parts)
    if beyond:
        within = [
            f"{_bare(lab)} {_pct(s[lab]['accuracy_within'])}"
            for lab in labels
            if _ok(s[lab].get("accuracy_within"))
        ]
        text += f" (within it: {', '.join(within)})" if within else ""
    else:
        text += "; no prompt went past the training length"
    return text + "."


def _documents(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    labels = [lab for lab in [base, *others] if lab is not None]
    n = next((s[lab]["n_documents"] for lab in labels if _ok(s[lab].get("n_documents"))), None)
    if not labels or n is None or n < 1:
        return None
    docs = f"Over {_int(n)} document{'s' if _int(n) != 1 else ''}"
    past = any(_ok(s[lab].get("nll_1_2x")) for lab in labels)
    key = "nll_1_2x" if past else "nll_within"
    where = "at 1-2x the training length" if past else "within the training length"
    parts, missing = [], []
    for lab in labels:
        v, cap = s[lab].get(key), s[lab].get("capped_at")
        capped = f" (capped at {_int(cap)} tokens)" if _ok(cap) else ""
        if not _ok(v):
            if _ok(cap):
                missing.append(f"{display_name(lab)} was capped at {_int(cap)} tokens, before that range")
            continue
        if not parts:
            parts.append(f"{_bare(lab)} {v:.2f} nats{capped}")
        else:
            parts.append(f"{v:.2f} with {display_name(lab)}{capped}")
    if not parts:
        return None
    text = f"{docs}, mean loss {where}{_train(result)}: {parts[0]}"
    text += (" vs " + ", ".join(parts[1:])) if len(parts) > 1 else ""
    far = [f"{_bare(lab)} {s[lab]['nll_2_4x']:.2f}" for lab in labels if _ok(s[lab].get("nll_2_4x"))]
    if past and far:
        text += f"; at 2-4x: {', '.join(far)}"
    if missing:
        text += "; " + "; ".join(missing)
    return text + "."


def _decoding(result: Any, s: dict, base: str | None, others: list[str]) -> str | None:
    def ok(lab: str) -> bool:
        return _ok(s[lab].get("ms_per_token"), s[lab].get("cache_mb"))

    patched = [lab for lab in others if ok(lab)]
    plain = base if base is not None and ok(base) else None
    shown = ([plain] if plain else []) + patched
    contexts = [s[lab]["context"] for lab in shown if _ok(s[lab].get("context"))]
    if not shown:
        return None
    ctx = max(contexts) if contexts else None

    def at(lab: str) -> str:  # a label measured at another context says so
        c = s[lab].get("context")
        return f" (at {_int(c)} tokens)" if ctx is not None and _ok(c) and _int(c) != _int(ctx) else ""

    def ms(lab: str) -> str:
        return _short(s[lab]["ms_per_token"])

    def mb(lab: str) -> str:
        return _short(s[lab]["cache_mb"])

    head = f"At {_int(ctx)} tokens of context, " if ctx is not None else "While decoding, "
    runs = [
        f"{display_name(lab)} decodes in {ms(lab)} ms/token with {_a(mb(lab))} {mb(lab)} MB cache{at(lab)}"
        for lab in patched
    ]
    if runs and plain:
        return (
            head
            + "; ".join(runs)
            + f" vs {ms(plain)} ms/token and {mb(plain)} MB for the plain model{at(plain)}."
        )
    if runs:
        return head + "; ".join(runs) + "."
    return (
        head + f"the plain model decodes in {ms(plain)} ms/token with {_a(mb(plain))} {mb(plain)} MB cache."
    )


def _rank(kind: str | None) -> int:
    return ORDER.index(kind) if kind in ORDER else len(ORDER)


_WRITERS: dict[str, Callable[..., str | None]] = {
    "logits": _logits,
    "entropy": _entropy,
    "positions": _positions,
    "perplexity": _perplexity,
    "passkey": _passkey,
    "documents": _documents,
    "decoding": _decoding,
}

# the outcomes first (loss, then the downstream evaluations), then the paper's factors, then cost
ORDER = ("perplexity", "documents", "passkey", "logits", "entropy", "positions", "decoding")


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

    Sentences follow ORDER: the loss first, loss over documents and passkey retrieval, then
    logits, entropy and positions, decoding cost last. With `meta`
    holding "length" (and "train_len"), a window within the training length is pointed out first.
    """
    note = _short_window(results, meta or {})
    out = [note] if note else []
    for result in sorted(results.values(), key=lambda r: _rank(kind_of(safe_summary(r)))):
        own = getattr(result, "findings", None)
        if callable(own):  # a result that words its own findings (the lab)
            out.extend(own())
            continue
        s = safe_summary(result)
        kind = kind_of(s)
        if kind is None:
            continue
        base, others = _split(s)
        sentence = _WRITERS[kind](result, s, base, others)
        if sentence:
            out.append(sentence)
    return out
