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

__all__ = ["NAMES", "display_name", "findings", "short_window_note"]


def short_window_note(results: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    """A sentence when the window does not go past the training length (nothing to diagnose)."""
    length = meta.get("length")
    tl = meta.get("train_len") or next(
        (r.train_len for r in results.values() if getattr(r, "train_len", None)), None
    )
    if isinstance(length, int) and isinstance(tl, int) and 0 < length <= tl:
        return (
            f"The window ({length} tokens) does not go past the training length ({tl} tokens), so nothing here "
            "can show the breakdown; run with a length above it (--length, --repeat for a short text), or "
            "analyse as if the training length were shorter (--train-len, a pretend-T null)."
        )
    return None


def findings(results: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> list[str]:
    """The short-window note (if any), then every result's `findings()` in section order."""
    note = short_window_note(results, meta or {})
    out = [note] if note else []
    for result in results.values():
        own = getattr(result, "findings", None)
        if callable(own):
            out.extend(own())
    return out
