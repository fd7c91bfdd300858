"""The summary of findings: each result's own sentences (generated from its verdicts and
intervals), after a note when the window does not reach past the training length.

Example:
    >>> from lminf_diag.synthetic import make_comparison
    >>> from lminf_diag.analyze import analyze_all
    >>> lines = findings(analyze_all([make_comparison(n=256, train_len=64, seed=s) for s in range(3)]))
    >>> any("inconclusive" in line or "absent" in line or "present" in line for line in lines)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lminf_diag.analyze.names import NAMES, display_name

__all__ = ["NAMES", "display_name", "findings", "patch_inactive_note", "short_window_note"]


def patch_inactive_note(meta: Mapping[str, Any]) -> str | None:
    """A sentence when the window is within n_local (the value the patched runs used, as the run's
    metadata reads it from the traces' patch settings): the patch cannot act, so a patched run reads
    exactly as the baseline does, which is no finding about the method.

    >>> print(patch_inactive_note({"length": 96, "n_local": 128, "labels": ["baseline", "lambda"]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    The window (96 tokens) is within n_local (128 tokens, the value the patched runs used), so the
    patch cannot act: lambda attend to every earlier token exactly as the baseline does here, and
    their lines compare the same attention twice, not the method; run with a window longer than
    n_local (--length, --repeat for a short text) or a smaller --n-local.
    >>> patch_inactive_note({"length": 96, "n_local": 128, "labels": ["baseline", "yarn"]}) is None
    True
    >>> patch_inactive_note({"length": 256, "n_local": 128, "labels": ["baseline", "lambda"]}) is None
    True
    """
    length, n_local = meta.get("length"), meta.get("n_local")
    from lminf_diag.attention.method_spec import ROPE_METHODS

    labels = [lab for lab in meta.get("labels") or [] if lab not in ("baseline", "recompute")]
    # a RoPE scaling (yarn, lambda+dynamic, ...) acts at any length: only attention-only runs are idle
    patched = [lab for lab in labels if not set(lab.split("+")) & set(ROPE_METHODS)]
    if not (patched and isinstance(length, int) and isinstance(n_local, int) and 0 < length <= n_local):
        return None
    return (
        f"The window ({length} tokens) is within n_local ({n_local} tokens, the value the patched runs used), "
        f"so the patch cannot act: {', '.join(patched)} attend to every earlier token exactly as the "
        "baseline does here, and their lines compare the same attention twice, not the method; run with a "
        "window longer than n_local (--length, --repeat for a short text) or a smaller --n-local."
    )


def short_window_note(results: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    """A sentence when the window does not go past the training length (nothing to diagnose), and/or
    when it is within n_local (the patch cannot act; `patch_inactive_note`)."""
    length = meta.get("length")
    tl = meta.get("train_len") or next(
        (r.train_len for r in results.values() if getattr(r, "train_len", None)), None
    )
    inactive = patch_inactive_note(meta)
    if isinstance(length, int) and isinstance(tl, int) and 0 < length <= tl:
        short = (
            f"The window ({length} tokens) does not go past the training length ({tl} tokens), so nothing here "
            "can show the breakdown; run with a length above it (--length, --repeat for a short text), or "
            "analyse as if the training length were shorter (--train-len, a pretend-T null)."
        )
        return short if inactive is None else f"{short} {inactive}"
    return inactive


def findings(results: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> list[str]:
    """The short-window note (if any), the run's own notes (`meta["notes"]`: e.g. where the baseline
    stops), then every result's `findings()` in section order."""
    note = short_window_note(results, meta or {})
    out = [note] if note else []
    out += [str(line) for line in (meta or {}).get("notes", [])]
    for result in results.values():
        own = getattr(result, "findings", None)
        if callable(own):
            out.extend(own())
    return out
