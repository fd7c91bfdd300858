"""The fixed parts of the report page: head (policy, style, error recorder), figure loader, tables.

The page loads nothing from the network: a Content-Security-Policy forbids every fetch, the
style is inline, and plotly.js is inlined once by the builder (``plotlyjs("cdn")``, CLI
``--plotlyjs cdn``, loads it from the plotly CDN instead, allowed by the policy). Two attributes on ``<html>``
let tests and readers see what happened in the browser: ``data-js-errors`` (JavaScript errors
recorded by ``window.onerror`` and failed figures; empty when all went well) and
``data-rendered`` (how many figures Plotly drew, out of ``data-figures``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from lminf_diag.report.escape import text

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1200px; margin: 0 auto; padding: 1rem 2rem 4rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-top: 0; } nav a { margin-right: 1rem; }
ul.findings li { margin: .4rem 0; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; } th .unit { font-weight: normal; color: #666; }
.figure { width: 100%; min-height: 420px; margin: 1rem 0; }
.meta td:first-child { color: #555; white-space: nowrap; }
.meta td { word-break: break-all; }
"""

# Runs first: records errors (script errors, failed resource loads, rejected promises).
ERROR_RECORDER = """
(function () {
  var errors = [];
  function record(message) {
    errors.push(String(message));
    document.documentElement.setAttribute("data-js-errors", errors.join(" | "));
  }
  window.__lminfRecordError = record;
  window.onerror = function (message, source, line) { record(message + " (" + source + ":" + line + ")"); };
  window.addEventListener("error", function (e) {
    if (e.target && e.target !== window) { record("failed to load " + (e.target.src || e.target.href || e.target.tagName)); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    record("unhandled rejection: " + (e.reason && e.reason.message ? e.reason.message : e.reason));
  });
})();
"""

# Runs last: draws every <script type="application/json" class="lminf-figure"> into its target div.
FIGURE_LOADER = """
(function () {
  var root = document.documentElement, drawn = 0;
  if (typeof Plotly === "undefined") { window.__lminfRecordError("plotly.js is missing"); return; }
  document.querySelectorAll("script.lminf-figure").forEach(function (node) {
    var id = node.getAttribute("data-target");
    try {
      var fig = JSON.parse(node.textContent);
      var config = {responsive: true, displaylogo: false};
      Plotly.newPlot(document.getElementById(id), fig.data || [], fig.layout || {}, config).then(
        function () { drawn += 1; root.setAttribute("data-rendered", String(drawn)); },
        function (err) { window.__lminfRecordError(id + ": " + err); });
    } catch (err) {
      window.__lminfRecordError(id + ": " + err);
    }
  });
})();
"""


PLOTLYJS_MODES = ("inline", "cdn")
_PLOTLYJS: ContextVar[str] = ContextVar("plotlyjs", default="inline")
CDN = "https://cdn.plot.ly"


@contextmanager
def plotlyjs(mode: str) -> Iterator[None]:
    """Pages written inside embed plotly.js ``"inline"`` (default: offline, about 4.6 MB) or load it
    from the plotly CDN (``"cdn"``: small files, needs the network to show figures).

    >>> with plotlyjs("cdn"):
    ...     CDN in head("t", 0, "/* bundle */")
    True
    >>> "/* bundle */" in head("t", 0, "/* bundle */")
    True
    """
    if mode not in PLOTLYJS_MODES:
        raise ValueError(f"plotlyjs must be one of {', '.join(PLOTLYJS_MODES)}, got {mode!r}")
    token = _PLOTLYJS.set(mode)
    try:
        yield
    finally:
        _PLOTLYJS.reset(token)


def _plotly_tag(plotly_js: str) -> tuple[str, str]:
    """(the plotly.js script tag, the page's policy) for the current mode."""
    if _PLOTLYJS.get() != "cdn":
        return f"<script>{plotly_js}</script>", CSP
    from plotly.offline.offline import get_plotlyjs_version

    src = f"{CDN}/plotly-{get_plotlyjs_version()}.min.js"
    policy = CSP.replace("script-src 'unsafe-inline'", f"script-src {CDN} 'unsafe-inline'")
    return f'<script src="{src}" charset="utf-8"></script>', policy


def head(title: str, n_figures: int, plotly_js: str) -> str:
    """``<!DOCTYPE html>`` through ``<body>``: policy, title, style, error recorder and plotly.js
    (inlined, or from the CDN inside ``plotlyjs("cdn")``)."""
    tag, policy = _plotly_tag(plotly_js)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en" data-js-errors="" data-figures="{int(n_figures)}" data-rendered="0">\n<head>\n'
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n"
        f"<script>{ERROR_RECORDER}</script>\n"
        f"{tag}\n</head>\n<body>\n"
    )


def foot() -> str:
    """The figure loader and the closing tags."""
    return f"<script>{FIGURE_LOADER}</script>\n</body>\n</html>\n"


def flatten(meta: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested metadata as (key, value text) rows: dicts give "outer / inner" keys, lists comma text.

    >>> flatten({"model": "m", "versions": {"torch": "2.13"}, "modes": ["lambda", "window"]})
    [('model', 'm'), ('versions / torch', '2.13'), ('modes', 'lambda, window')]
    """
    rows: list[tuple[str, str]] = []
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += flatten(value, f"{name} / ") if value else [(name, "-")]
        elif isinstance(value, (list, tuple)):
            rows.append((name, ", ".join(str(v) for v in value) if value else "-"))
        else:
            rows.append((name, "-" if value is None else str(value)))
    return rows


def table(header: Iterable[str], rows: Iterable[Iterable[tuple[str, bool]]], css: str = "") -> str:
    """An HTML table; header cells may hold markup (already escaped), body cells are (text, numeric)."""
    cls = f' class="{text(css)}"' if css else ""
    out = [
        f"<table{cls}>",
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for row in rows:
        cells = "".join(('<td class="num">' if num else "<td>") + f"{text(v)}</td>" for v, num in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
