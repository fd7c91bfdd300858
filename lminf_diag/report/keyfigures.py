"""Key figures and verdicts: what each result declares, gathered into tables (no guessing).

Every result declares its own key figures (`result.key_figures()`, a list of `Estimate`s with
their interval and n) and verdicts (`result.verdicts()`); the report and the CLI only lay them
out. A result without `key_figures` contributes no row.

Example:
    >>> from lminf_diag.synthetic import make_comparison
    >>> from lminf_diag.analyze import entropy_growth
    >>> table = key_table({"entropy": entropy_growth(make_comparison(n=256, train_len=64))})
    >>> table.rows[0].figure, table.rows[0].label
    ('entropy slope past T, net of null', 'baseline')
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lminf_diag.analyze.estimate import Estimate, Verdict

MAX_WIDTH = 100  # the terminal table fits in this many columns


@dataclass
class KeyTable:
    """The key figures of several results, in report order, with the section each comes from."""

    rows: list[Estimate] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(e.label for e in self.rows))

    def to_records(self) -> list[dict[str, Any]]:
        """`[{figure, label, estimate, ci_low, ci_high, n, unit, null, method, section}]` (NaN -> None)."""
        return [{**e.to_dict(), "section": s} for e, s in zip(self.rows, self.sections, strict=True)]

    def to_dict(self) -> list[dict[str, Any]]:
        """Same as `to_records` (the JSON form)."""
        return self.to_records()


def key_table(results: Mapping[str, Any]) -> KeyTable:
    """Every result's declared key figures, in section order."""
    table = KeyTable()
    for name, result in results.items():
        own = getattr(result, "key_figures", None)
        for e in own() if callable(own) else []:
            table.rows.append(e)
            table.sections.append(name)
    return table


def verdict_list(results: Mapping[str, Any]) -> list[Verdict]:
    """Every result's declared verdicts, in section order."""
    out: list[Verdict] = []
    for result in results.values():
        own = getattr(result, "verdicts", None)
        out.extend(own() if callable(own) else [])
    return out


def fmt(value: float | int | None) -> str:
    """A number as short text: ints as integers, floats with 3 decimals, "n/a" for NaN.

    >>> fmt(0.31234), fmt(float("nan")), fmt(12345.6), fmt(1024)
    ('0.312', 'n/a', '1.23e+04', '1024')
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if value is None or not math.isfinite(value):
        return "n/a"
    if float(value).is_integer() and abs(value) >= 1000:
        return str(int(value))
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def interval(e: Estimate) -> str:
    """'[lo, hi]', '[lo, ≥]' when the upper end is censored (+inf), or '—' when there is no interval.

    >>> interval(Estimate("x", "b", 1.0, 0.5, 1.5, 4)), interval(Estimate("x", "b", 9, 8, float("inf"), 4))
    ('[0.500, 1.500]', '[8, ≥]')
    """
    if math.isfinite(e.ci_low) and e.ci_high == math.inf:
        return f"[{fmt(e.ci_low)}, ≥]"
    return f"[{fmt(e.ci_low)}, {fmt(e.ci_high)}]" if e.has_interval else "—"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(table: KeyTable, width: int = MAX_WIDTH) -> str:
    """Plain-text table, one row per key figure (figure, label, estimate, 95% CI, n), within `width`.

    >>> t = KeyTable([Estimate("NLL past T", "baseline", 7.4, 7.1, 7.7, 4, "nats")], ["ppl"])
    >>> print(format_table(t))
    figure      label     estimate  95% CI            n
    NLL past T  baseline  7.400     [7.100, 7.700]    4
    """
    if not table.rows:
        return "(no key figures)"
    header = ["figure", "label", "estimate", "95% CI", "n"]
    rows = [[e.figure, e.label, fmt(e.estimate), interval(e), str(e.n)] for e in table.rows]
    fixed = [max(len(r[i]) for r in [header, *rows]) for i in range(2, 5)]
    room = width - sum(fixed) - 2 * 4
    w_label = min(max(len(r[1]) for r in [header, *rows]), max(8, room // 3))
    w_fig = max(10, min(max(len(r[0]) for r in [header, *rows]), room - w_label))
    widths = [w_fig, w_label, fixed[0], max(fixed[1], 16), fixed[2]]
    lines = [
        "  ".join(_clip(cell, w).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def format_verdicts(verdicts: list[Verdict]) -> str:
    """Plain-text verdict table: factor, label, verdict.

    >>> print(format_verdicts([Verdict("entropy_growth", "baseline", "present")]))
    factor          label     verdict
    entropy_growth  baseline  present
    """
    if not verdicts:
        return "(no verdicts)"
    rows = [["factor", "label", "verdict"]] + [[v.factor, v.label, v.verdict] for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


__all__ = ["KeyTable", "fmt", "format_table", "format_verdicts", "interval", "key_table", "verdict_list"]
