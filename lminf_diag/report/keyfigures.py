"""Key figures: the few numbers per result that the summary table shows (labels x figures).

A result's kind is told from its `summary()` keys, so results of other analyzers work too:
known kinds show chosen figures with units, any other result its first few summary keys.
Known kinds: the four analyzers (entropy, logits, positions, perplexity), the evaluations
(passkey retrieval, loss over documents, decoding speed and cache memory) and the lab's
comparison of position schemes. Counts, token lengths and other whole numbers (`INTEGER_KEYS`)
are kept as ints, so they print as integers.

Example:
    >>> from tests.synthetic import make_comparison
    >>> from lminf_diag.analyze import entropy_growth
    >>> table = key_table({"entropy": entropy_growth(make_comparison(n=256, train_len=64))})
    >>> [c.header for c in table.columns][:2], table.labels
    (['entropy slope ≤T', 'entropy slope >T'], ['baseline', 'lambda'])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OTHER_KEYS = 4  # summary keys shown for a result of unknown kind

# kind -> (the summary key that identifies it, [(key, short header, unit), ...])
KINDS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "entropy": (
        "slope_beyond",
        [
            ("slope_within", "entropy slope ≤T", "nats per ln n"),
            ("slope_beyond", "entropy slope >T", "nats per ln n"),
        ],
    ),
    "logits": (
        "envelope_ratio",
        [
            ("excess", "logit excess >T", "logit units"),
            ("envelope_ratio", "logit envelope ratio", "beyond / within"),
        ],
    ),
    "positions": (
        "probe_r2",
        [
            ("probe_r2", "position probe R²", "R², 1 = position fully readable"),
            ("first_token_distance", "first-token distance", "spreads"),
        ],
    ),
    "perplexity": (
        "nll_beyond",
        [
            ("nll_within", "NLL ≤T", "nats per token"),
            ("nll_beyond", "NLL >T", "nats per token"),
        ],
    ),
    "passkey": (
        "accuracy_beyond",
        [
            ("accuracy_within", "passkey ≤T", "fraction correct"),
            ("accuracy_beyond", "passkey >T", "fraction correct"),
            ("n_prompts", "passkey prompts", "prompts"),
        ],
    ),
    "documents": (
        "nll_1_2x",
        [
            ("nll_within", "docs NLL ≤T", "nats per token"),
            ("nll_1_2x", "docs NLL 1-2T", "nats per token"),
            ("nll_2_4x", "docs NLL 2-4T", "nats per token"),
            ("capped_at", "docs capped at", "tokens (n/a: full length)"),
            ("n_documents", "documents", "documents"),
        ],
    ),
    "decoding": (
        "ms_per_token",
        [
            ("context", "decode context", "tokens"),
            ("ms_per_token", "decode latency", "ms per token"),
            ("cache_mb", "KV cache", "MB"),
        ],
    ),
    "lab": (
        "fluent_until",
        [
            ("entropy_slope_beyond", "entropy slope >T", "nats per ln n"),
            ("logit_envelope_ratio", "logit envelope ratio", "beyond / within"),
            ("position_probe_r2", "position probe R²", "R², 1 = position fully readable"),
            ("probe_r2_in_range", "probe R² ≤T", "best layer, windows within the training length"),
            ("nll_ratio", "NLL >T / in-range", "mean loss past T over the loss at T/2..T"),
            ("multiple", "at length", "x training length"),
            ("fluent_until", "fluent until", "tokens (loss within tolerance of in-range)"),
        ],
    ),
}
# summary keys of the known kinds that hold whole numbers (counts, token lengths)
INTEGER_KEYS = frozenset({"n_prompts", "n_documents", "capped_at", "context", "multiple", "fluent_until"})


@dataclass(frozen=True)
class Column:
    """One key figure: which result (`section`) and summary key, with a header and a unit."""

    section: str
    key: str
    header: str
    unit: str = ""
    integer: bool = False  # whole numbers: values are kept as ints (NaN where missing)


@dataclass
class KeyTable:
    """labels x columns of floats (NaN where a label lacks the figure; ints in integer columns)."""

    columns: list[Column] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    values: dict[str, list[float | int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, float | int]]:
        """{label: {"<section>.<key>": value}}."""
        return {
            lab: {f"{c.section}.{c.key}": v for c, v in zip(self.columns, vals, strict=True)}
            for lab, vals in self.values.items()
        }


def kind_of(summary: Mapping[str, Mapping[str, float]]) -> str | None:
    """The known kind of a result from its summary keys, or None.

    >>> kind_of({"baseline": {"nll_within": 2.0, "nll_beyond": 3.0}})
    'perplexity'
    >>> kind_of({"lambda": {"context": 4096.0, "ms_per_token": 9.5, "cache_mb": 12.0}})
    'decoding'
    """
    keys = {k for figures in summary.values() for k in figures}
    return next((kind for kind, (marker, _) in KINDS.items() if marker in keys), None)


def safe_summary(result: Any) -> dict[str, dict[str, float]]:
    """`result.summary()` as {label: {key: float}}; non-numeric values are dropped."""
    out: dict[str, dict[str, float]] = {}
    for lab, figures in (result.summary() or {}).items():
        row = {}
        for k, v in (figures or {}).items():
            try:
                row[str(k)] = float(v)
            except (TypeError, ValueError):
                continue
        out[str(lab)] = row
    return out


def key_table(results: Mapping[str, Any]) -> KeyTable:
    """The key figures of every result, one column each, rows in first-seen label order."""
    table = KeyTable()
    summaries = {name: safe_summary(r) for name, r in results.items()}
    for name, summary in summaries.items():
        kind = kind_of(summary)
        if kind is not None:
            columns = [
                Column(name, key, header, unit, key in INTEGER_KEYS) for key, header, unit in KINDS[kind][1]
            ]
        else:
            keys = list(dict.fromkeys(k for figures in summary.values() for k in figures))[:OTHER_KEYS]
            columns = [Column(name, k, f"{name}: {k}") for k in keys]
        table.columns += columns
        for lab in summary:
            if lab not in table.labels:
                table.labels.append(lab)
    for lab in table.labels:
        table.values[lab] = [
            _cell(summaries[c.section].get(lab, {}).get(c.key, math.nan), c.integer) for c in table.columns
        ]
    return table


def _cell(value: float, integer: bool) -> float | int:
    """`value` as an int in an integer column (when finite and whole), else unchanged."""
    if integer and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def fmt(value: float | int | None) -> str:
    """A key figure as short text: ints as integers, floats with 3 decimals, "n/a" for NaN.

    >>> fmt(0.31234), fmt(float("nan")), fmt(12345.6), fmt(1024)
    ('0.312', 'n/a', '1.23e+04', '1024')
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def format_table(table: KeyTable) -> str:
    """Plain-text table, labels as rows and key figures as columns (the CLI's summary table).

    >>> t = KeyTable([Column("p", "nll_beyond", "NLL >T")], ["baseline"], {"baseline": [7.4]})
    >>> print(format_table(t))
    label     NLL >T
    baseline  7.400
    """
    if not table.columns:
        return "(no key figures)"
    header = ["label", *[c.header for c in table.columns]]
    rows = [[lab, *[fmt(v) for v in table.values[lab]]] for lab in table.labels]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    ]
    return "\n".join(lines)
