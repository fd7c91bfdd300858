"""``diag books``: the bundled books, the names ``--text`` and ``--haystack`` accept.

Example:
    >>> print(render([b.to_dict() for b in __import__("lminf_diag.data").data.book_info()[:1]]))
    ... # doctest: +ELLIPSIS
    Bundled books (use with --text NAME; any UTF-8 text file path works too):
    ...
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lminf_diag.cli import options

VERB = "books"


def render(books: list[dict[str, Any]]) -> str:
    """The listing as plain text: one row per book, then the provenance."""
    header = ["name", "characters", "tokens (SmolLM2)", "tokens (lab: bytes)", "title"]
    rows = [
        [
            b["name"],
            f"{b['characters']:,}",
            "-" if b["tokens_smollm2"] is None else f"{b['tokens_smollm2']:,}",
            f"{b['bytes']:,}",
            b["title"],
        ]
        for b in books
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["Bundled books (use with --text NAME; any UTF-8 text file path works too):"]
    for r in [header, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if books:
        total = sum(b["tokens_smollm2"] or 0 for b in books)
        lines += ["", f"--text all-books: every book joined ({total:,} SmolLM2 tokens), for windows longer "
                  "than one book (128k tokens).", f"Provenance: {books[0]['provenance']}."]
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "list the bundled books (names for --text), their size and provenance",
        "List the public-domain books bundled with the package: the name --text (and --haystack)\n"
        "accept, characters, tokens for the embedded model and for the byte-level lab models, title\n"
        "and provenance. The first window of a run comes from --text, the next ones from the other\n"
        "books in turn.",
        ["diag books", "diag books --json"],
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Print the listing; returns 0."""
    from lminf_diag.data import book_info

    books = [b.to_dict() for b in book_info()]
    print(json.dumps(books, indent=2) if args.json else render(books))
    return 0
