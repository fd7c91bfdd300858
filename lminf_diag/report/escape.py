"""Escaping for the HTML report: every string that comes from input goes through one of these.

- `text` for element content and attribute values (``html.escape`` with quotes, from `util.html`);
- `script_json` / `escape_script_json` for JSON placed inside a ``<script>`` element: ``<``, ``>``,
  ``&`` and the JavaScript line separators become ``\\uXXXX`` escapes, so no payload such as
  ``</script><script>alert(1)</script>`` can close the element;
- `ident` for element ids built from keys.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lminf_diag.util.html import text  # noqa: F401  (the report's escaper for element text)
from lminf_diag.util.jsonsafe import to_json_safe

_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SCRIPT_RE = re.compile("[<>&\u2028\u2029]")


def escape_script_json(json_text: str) -> str:
    """Escape a JSON document for a ``<script>`` element; JSON.parse reads it back unchanged.

    Only valid on JSON text: outside strings JSON never holds ``<``, ``>`` or ``&``.

    >>> escape_script_json('{"a": "</script><script>alert(1)</script>"}')
    '{"a": "\\\\u003c/script\\\\u003e\\\\u003cscript\\\\u003ealert(1)\\\\u003c/script\\\\u003e"}'
    """
    return _SCRIPT_RE.sub(lambda m: _SCRIPT_UNSAFE[m.group(0)], json_text)


def script_json(obj: Any) -> str:
    """`obj` as JSON that is safe inside ``<script>`` (NaN and inf become null).

    >>> script_json({"label": "<b>", "x": float("nan")})
    '{"label": "\\\\u003cb\\\\u003e", "x": null}'
    """
    return escape_script_json(json.dumps(to_json_safe(obj), allow_nan=False, default=str))


def ident(value: Any) -> str:
    """A safe element id made from `value` (letters, digits, ``-`` and ``_`` only).

    >>> ident("entropy growth <x>")
    'entropy-growth-x'
    """
    out = re.sub(r"[^A-Za-z0-9_-]+", "-", str(value)).strip("-")
    return out or "section"
