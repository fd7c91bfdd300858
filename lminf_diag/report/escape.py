"""Escaping for the HTML report: every string that comes from input goes through one of these.

- `text` for element content and attribute values (``html.escape`` with quotes);
- `script_json` / `escape_script_json` for JSON placed inside a ``<script>`` element: ``<``, ``>``,
  ``&`` and the JavaScript line separators become ``\\uXXXX`` escapes, so no payload such as
  ``</script><script>alert(1)</script>`` can close the element;
- `ident` for element ids built from keys.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any

_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SCRIPT_RE = re.compile("[<>&\u2028\u2029]")


def text(value: Any) -> str:
    """`value` as text safe inside an element or a quoted attribute.

    >>> text('"><img src=x onerror=alert(1)>')
    '&quot;&gt;&lt;img src=x onerror=alert(1)&gt;'
    """
    return html.escape("" if value is None else str(value), quote=True)


def escape_script_json(json_text: str) -> str:
    """Escape a JSON document for a ``<script>`` element; JSON.parse reads it back unchanged.

    Only valid on JSON text: outside strings JSON never holds ``<``, ``>`` or ``&``.

    >>> escape_script_json('{"a": "</script><script>alert(1)</script>"}')
    '{"a": "\\\\u003c/script\\\\u003e\\\\u003cscript\\\\u003ealert(1)\\\\u003c/script\\\\u003e"}'
    """
    return _SCRIPT_RE.sub(lambda m: _SCRIPT_UNSAFE[m.group(0)], json_text)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def script_json(obj: Any) -> str:
    """`obj` as JSON that is safe inside ``<script>`` (NaN and inf become null).

    >>> script_json({"label": "<b>", "x": float("nan")})
    '{"label": "\\\\u003cb\\\\u003e", "x": null}'
    """
    return escape_script_json(json.dumps(_finite(obj), allow_nan=False, default=str))


def ident(value: Any) -> str:
    """A safe element id made from `value` (letters, digits, ``-`` and ``_`` only).

    >>> ident("entropy growth <x>")
    'entropy-growth-x'
    """
    out = re.sub(r"[^A-Za-z0-9_-]+", "-", str(value)).strip("-")
    return out or "section"
