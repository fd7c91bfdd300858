"""How results, comparisons and traces show themselves in a terminal and in Jupyter.

`short_repr` is the one-line `repr` (kind, labels, windows, training length, the verdicts and
the key figure each verdict is decided from; never an array); `html_table` is the small HTML
table of `_repr_html_` (`util.html`: every string escaped).

Example:
    >>> from lminf_diag.analyze.estimate import Estimate, Verdict
    >>> est = Estimate("excess", "baseline", 1.25, 0.5, 2.0, 4, unit="logit")
    >>> figure_text(est)
    'excess 1.25 [0.5, 2]'
    >>> "<td>1.25</td>" in html_table(["figure", "estimate"], [["excess", "1.25"]])
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lminf_diag.util.html import html_table
from lminf_diag.util.html import text as esc

if TYPE_CHECKING:
    from lminf_diag.analyze.base import AnalysisResult
    from lminf_diag.analyze.estimate import Estimate

MAX_REPR = 280  # characters of a one-line repr (longer ones end in "...")


def number(x: float) -> str:
    """A float in at most 3 significant digits ('n/a' for NaN, '∞' for infinity).

    >>> number(0.123456), number(1234.5), number(float("nan"))
    ('0.123', '1.23e+03', 'n/a')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.3g}"


def interval_text(e: Estimate) -> str:
    """'[low, high]', '' without an interval."""
    if not (math.isfinite(e.ci_low) or math.isfinite(e.ci_high)):
        return ""
    return f"[{number(e.ci_low)}, {number(e.ci_high)}]"


def figure_text(e: Estimate) -> str:
    """'figure estimate [low, high]' of one estimate."""
    ci = interval_text(e)
    return f"{e.figure} {number(e.estimate)}" + (f" {ci}" if ci else "")


def clip(line: str, limit: int = MAX_REPR) -> str:
    """`line` cut to `limit` characters, ending in '...' when cut.

    >>> clip("abcdef", 5)
    'ab...'
    """
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _safe(call: Any, default: Any) -> Any:
    try:
        return call()
    except Exception:  # a repr must never raise: an incomplete result still shows its kind
        return default


def n_windows(result: AnalysisResult) -> int | None:
    """The number of windows (or trials) behind a result's key figures, None when unknown."""
    n = getattr(result, "n_windows", None)
    if isinstance(n, int) and n > 0:
        return n
    ns = [e.n for e in _safe(result.key_figures, [])]
    return max(ns) if ns else None


def short_repr(result: AnalysisResult) -> str:
    """One line: kind, labels, windows, T, then each verdict with the figure it was decided from.

    >>> from lminf_diag.analyze.base import AnalysisResult
    >>> short_repr(AnalysisResult(labels=["baseline", "lambda"], train_len=128))
    "<AnalysisResult labels=['baseline', 'lambda'] T=128>"
    """
    parts = [f"<{type(result).__name__}", f"labels={list(result.labels)!r}"]
    n = n_windows(result)
    if n:
        parts.append(f"windows={n}")
    if result.train_len:
        parts.append(f"T={result.train_len}")
    verdicts = _safe(result.verdicts, [])
    figures = {(e.label, e.figure): e for e in _safe(result.key_figures, [])}
    shown = []
    for v in verdicts:
        e = figures.get((v.label, v.figure))
        shown.append(f"{v.label} {v.factor} {v.verdict}" + (f" ({figure_text(e)})" if e else ""))
    if not shown:  # no verdicts: the first key figures
        shown = [f"{e.label} {figure_text(e)}" for e in list(figures.values())[:3]]
    line = " ".join(parts) + (": " + "; ".join(shown) if shown else "")
    return clip(line, MAX_REPR - 1) + ">"


def result_html(result: AnalysisResult) -> str:
    """The title and a line of facts, the verdicts, and the key figures with their 95% intervals."""
    facts = [f"labels: {', '.join(result.labels)}"] if result.labels else []
    if hasattr(result, "models") and callable(result.models):
        facts.append(f"models: {', '.join(_safe(result.models, []))}")
    n = n_windows(result)
    if n:
        facts.append(f"windows: {n}")
    if result.train_len:
        facts.append(f"training length: {result.train_len}")
    title = result.title or type(result).__name__
    out = [f"<div><strong>{esc(title)}</strong> <small>({esc(type(result).__name__)})</small>",
           f"<p>{esc('; '.join(facts))}</p>"]
    verdicts = _safe(result.verdicts, [])
    if verdicts:
        rows = [[v.factor, v.label, v.verdict, v.figure] for v in verdicts]
        out.append(html_table(["factor", "label", "verdict", "decided from"], rows, "verdicts"))
    figures = _safe(result.key_figures, [])
    if figures:
        rows = [[e.figure, e.label, number(e.estimate), interval_text(e), e.n, e.unit] for e in figures]
        out.append(html_table(["figure", "label", "estimate", "95% interval", "n", "unit"], rows, "key figures"))
    out.append("</div>")
    return "".join(out)


__all__ = ["clip", "esc", "figure_text", "html_table", "interval_text", "number", "result_html", "short_repr"]
