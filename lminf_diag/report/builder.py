"""`build_report`: one self-contained HTML file from analysis results and the run's metadata.

Page order: title and run line; summary of findings in plain words; key-figure table; one
section per result (title, description, figures as the analyzer drew them); run metadata.
plotly.js is inlined once; each figure is its ``fig.to_json()`` in a
``<script type="application/json">`` element, drawn by a small loader script at the end.
Any object with the AnalysisResult protocol (title, description, summary(), figures()) works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from lminf_diag.report import page
from lminf_diag.report.escape import escape_script_json, ident, text
from lminf_diag.report.findings import findings
from lminf_diag.report.keyfigures import fmt, interval, key_table, verdict_list
from lminf_diag.util.atomic import atomic_write_text

DEFAULT_TITLE = "Past the training length: LM-Infinite diagnosis"


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js bundle shipped with the plotly package (inlined once per report)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def as_results(results: Any) -> dict[str, Any]:
    """Normalise a dict, a list or a single result into {section key: result}, keys unique.

    >>> from lminf_diag.synthetic import make_trace
    >>> from lminf_diag.analyze import entropy_growth
    >>> r = entropy_growth(make_trace(n=64, train_len=16))
    >>> keys = list(as_results([r, r]))  # from the title, made unique
    >>> keys == [ident(r.title), ident(r.title) + "-2"]
    True
    """
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif hasattr(results, "figures") and not isinstance(results, (list, tuple)):
        items = [(getattr(results, "title", "") or "result", results)]
    elif isinstance(results, Iterable) and not isinstance(results, (str, bytes)):
        items = [(getattr(r, "title", "") or f"result-{i + 1}", r) for i, r in enumerate(results)]
    else:
        raise TypeError(
            f"expected analysis results (a dict, a list or one result), got {type(results).__name__}"
        )
    out: dict[str, Any] = {}
    for key, result in items:
        base = name = ident(key)
        i = 1
        while name in out:
            i += 1
            name = f"{base}-{i}"
        out[name] = result
    return out


def _train_len(results: Mapping[str, Any], meta: Mapping[str, Any]) -> Any:
    if meta.get("train_len"):
        return meta["train_len"]
    return next((r.train_len for r in results.values() if getattr(r, "train_len", None)), None)


def _header(title: str, results: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    bits = []
    if meta.get("model"):
        bits.append(f"model {text(meta['model'])}")
    if meta.get("text"):
        bits.append(f"text {text(meta['text'])}")
    if meta.get("length"):
        bits.append(f"{text(meta['length'])} tokens")
    tl = _train_len(results, meta)
    if tl:
        bits.append(f"training length {text(tl)} tokens")
    nav = ['<a href="#findings">Findings</a>', '<a href="#verdicts">Verdicts</a>',
           '<a href="#key-figures">Key figures</a>']
    nav += [f'<a href="#sec-{key}">{text(getattr(r, "title", key))}</a>' for key, r in results.items()]
    nav.append('<a href="#metadata">Run metadata</a>')
    return (
        f'<header><h1>{text(title)}</h1><p class="sub">{" · ".join(bits)}</p></header>\n'
        f"<nav>{' '.join(nav)}</nav>\n"
    )


def _findings(results: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    lines = findings(results, meta) or ["No key figure could be computed for these runs."]
    items = "".join(f"<li>{text(line)}</li>" for line in lines)
    return f'<section id="findings"><h2>Summary of findings</h2><ul class="findings">{items}</ul></section>\n'


def _verdicts(results: Mapping[str, Any]) -> str:
    verdicts = verdict_list(results)
    if not verdicts:
        return ""
    header = ["factor", "label", "verdict", "decided from", "what it tests"]
    rows = [
        [(v.factor, False), (v.label, False), (v.verdict, False), (v.figure, False), (v.tests, False)]
        for v in verdicts
    ]
    note = (
        "<p>Each verdict is decided from a 95% interval between independent text windows, net of its null "
        "(the same statistic where nothing is out of distribution): <b>present</b> when the whole interval "
        "lies above the factor's margin, <b>absent</b> when it lies below, <b>inconclusive</b> otherwise "
        "(including a single window, which has no interval).</p>"
    )
    return f'<section id="verdicts"><h2>Verdicts</h2>{note}\n{page.table(header, rows)}</section>\n'


def _key_figures(results: Mapping[str, Any]) -> str:
    table = key_table(results)
    header = ["figure", "label", "estimate", "95% interval", "n", "unit"]
    rows = [
        [(e.figure, False), (e.label, False), (fmt(e.estimate), True), (interval(e), True), (str(e.n), True),
         (e.unit, False)]
        for e in table.rows
    ]
    note = (
        "<p>T is the training length. n is the number of independent windows (or trials) an estimate is "
        "taken over; the interval is between them. The sections below define every figure.</p>"
    )
    return f'<section id="key-figures"><h2>Key figures</h2>{note}\n{page.table(header, rows)}</section>\n'


def _section(key: str, result: Any, start: int) -> tuple[str, int]:
    parts = [f'<section id="sec-{key}"><h2>{text(getattr(result, "title", key))}</h2>']
    if getattr(result, "description", ""):
        parts.append(f"<p>{text(result.description)}</p>")
    n = 0
    for fig in result.figures() or []:
        fid = f"fig-{start + n}"
        data = escape_script_json(fig.to_json())
        parts.append(f'<div class="figure" id="{fid}"></div>')
        parts.append(
            f'<script type="application/json" class="lminf-figure" data-target="{fid}">{data}</script>'
        )
        n += 1
    parts.append("</section>\n")
    return "\n".join(parts), n


def _metadata(meta: Mapping[str, Any]) -> str:
    rows = [[(k, False), (v, False)] for k, v in page.flatten(meta)]
    return f'<section id="metadata"><h2>Run metadata</h2>\n{page.table(["setting", "value"], rows, "meta")}</section>\n'


def render_report(results: Any, meta: Mapping[str, Any] | None = None, *, title: str | None = None) -> str:
    """The report as one HTML string (what `build_report` writes)."""
    items = as_results(results)
    meta = dict(meta or {})
    sections, n_figs = [], 0
    for key, result in items.items():
        html, n = _section(key, result, n_figs)
        sections.append(html)
        n_figs += n
    body = [_header(title or DEFAULT_TITLE, items, meta), _findings(items, meta), _verdicts(items),
            _key_figures(items)]
    body += sections + [_metadata(meta)]
    return page.head(title or DEFAULT_TITLE, n_figs, plotly_js()) + "".join(body) + page.foot()


def build_report(
    results: Any, meta: Mapping[str, Any] | None, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write one self-contained HTML report to `path` (atomically) and return the path.

    `results`: {name: result}, a list of results or one result; each needs `title`,
    `description`, `summary()` and `figures()`. `meta`: the run's settings and versions,
    shown as a table (nested dicts flatten to "outer / inner" rows).

    >>> import tempfile
    >>> from lminf_diag.synthetic import make_comparison
    >>> from lminf_diag.analyze import analyze_all
    >>> out = build_report(analyze_all(make_comparison(n=256, train_len=64)),
    ...                    {"model": "synthetic"}, tempfile.mkdtemp() + "/report.html")
    >>> out.read_text().count("<script type=\\"application/json\\"") > 0
    True
    """
    return atomic_write_text(path, render_report(results, meta, title=title))
