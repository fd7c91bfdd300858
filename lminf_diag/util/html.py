"""HTML pieces every layer may show (a trace's Jupyter table, a result's, the report page):
escaped text and a small table. Every string that comes from input goes through `text`.

Example:
    >>> text('"><img src=x onerror=alert(1)>')
    '&quot;&gt;&lt;img src=x onerror=alert(1)&gt;'
    >>> "<td>1.25</td>" in html_table(["figure", "estimate"], [["excess", "1.25"]])
    True
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

MAX_ROWS = 40  # rows of an HTML table (more are summarised in one line)


def text(value: Any) -> str:
    """`value` as text safe inside an element or a quoted attribute (None: empty).

    >>> text("<b>") + text(None)
    '&lt;b&gt;'
    """
    return html.escape("" if value is None else str(value), quote=True)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """A small HTML table; every cell and the caption are escaped, rows past `MAX_ROWS` summarised.

    >>> html_table(["a"], [[1]] * 41).endswith('<tr><td colspan="1">... 1 more rows</td></tr></tbody></table>')
    True
    """
    head = "".join(f"<th>{text(h)}</th>" for h in header)
    body = []
    for row in rows[:MAX_ROWS]:
        body.append("<tr>" + "".join(f"<td>{text(c)}</td>" for c in row) + "</tr>")
    if len(rows) > MAX_ROWS:
        body.append(f'<tr><td colspan="{len(header)}">... {len(rows) - MAX_ROWS} more rows</td></tr>')
    cap = f"<caption>{text(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


__all__ = ["MAX_ROWS", "html_table", "text"]
