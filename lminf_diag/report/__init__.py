"""The HTML report: one self-contained page (plotly.js inlined, no network) from analysis results.

Example:
    >>> import tempfile
    >>> from lminf_diag.synthetic import make_comparison
    >>> from lminf_diag.analyze import analyze_all
    >>> from lminf_diag.report import build_report
    >>> path = build_report(analyze_all(make_comparison(n=256, train_len=64)),
    ...                     {"model": "synthetic", "length": 256}, tempfile.mkdtemp() + "/report.html")
    >>> path.name
    'report.html'
"""

from lminf_diag.report.builder import as_results, build_report, render_report
from lminf_diag.report.escape import escape_script_json, script_json, text
from lminf_diag.report.findings import display_name, findings
from lminf_diag.report.keyfigures import KeyTable, fmt, format_table, format_verdicts, key_table, verdict_list

__all__ = [
    "KeyTable",
    "as_results",
    "build_report",
    "display_name",
    "escape_script_json",
    "findings",
    "fmt",
    "format_table",
    "format_verdicts",
    "key_table",
    "render_report",
    "script_json",
    "text",
    "verdict_list",
]
