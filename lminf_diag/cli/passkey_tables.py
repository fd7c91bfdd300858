"""Plain-text tables of a passkey result: accuracy per run and length, and by the needle's place in the Λ.

Shared by `diag passkey` and the passkey section of `diag report` / `diag methods`.

Example:
    >>> from lminf_diag.cli.passkey_tables import _share
    >>> _share(1, 2)
    '0.50 [0.09, 0.91]'
"""

from __future__ import annotations

from typing import Any


def _columns(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def _share(k: int, n: int) -> str:
    """'0.60 [0.39, 0.78]' (Wilson 95%) or 'n/a' without prompts.

    >>> _share(12, 20), _share(0, 0)
    ('0.60 [0.39, 0.78]', 'n/a')
    """
    from lminf_diag.analyze.estimate import wilson

    if not n:
        return "n/a"
    p, lo, hi = wilson(k, n)
    return f"{p:.2f} [{lo:.2f}, {hi:.2f}]"


def accuracy_table(result: Any) -> str:
    """Plain-text table: one row per run; correct/prompts per length, then accuracy within / beyond T
    with its Wilson 95% interval."""
    header = ["run", *[str(n) for n in result.lengths], "within T", "beyond T"]
    rows = []
    for lab in result.labels:
        per = [f"{k}/{n}" for k, n in result.counts_by_length(lab)]
        (kw, nw), (kb, nb) = result.within_beyond(lab)
        rows.append([lab, *per, _share(kw, nw), _share(kb, nb)])
    return _columns(header, rows)


def lambda_table(result: Any) -> str:
    """Plain-text table over the prompts longer than n_local: per run, accuracy with the needle inside
    and outside the Λ, and the share of needles inside it (for the baseline: the lambda settings' Λ)."""
    rows = []
    for lab in result.labels:
        c = result.conditional(lab)
        if not c["all"][1]:
            continue
        (ki, ni), (ko, no), (ks, ns) = c["inside"], c["outside"], c["share_inside"]
        rows.append([lab, f"{ki}/{ni}", _share(ki, ni), f"{ko}/{no}", _share(ko, no), _share(ks, ns)])
    if not rows:
        return f"(no prompt longer than n_local = {result.n_local}: every needle lies inside the window)"
    header = [
        "run",
        "inside",
        "accuracy inside Λ",
        "outside",
        "accuracy outside Λ",
        "share inside (expected)",
    ]
    return _columns(header, rows)
