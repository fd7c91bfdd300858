"""Contamination control: a paragraph-shuffled copy of a text, which a model cannot recite from memory.

The bundled books are classics and likely in a pretrained model's training data. A model that
memorised a book predicts it better than it predicts text of the same kind, so low losses on
it may come from recall rather than from reading. `shuffle_paragraphs` keeps every paragraph
(same vocabulary, same local statistics, the same multiset of paragraphs) and destroys the
global order, so memorised continuations across paragraph boundaries no longer help.

What comparing the two shows, at equal positions (`analyze.loss`, label "<run> (shuffled)"):

- in-range loss, shuffled minus original, paired by window: if the model memorised the text,
  the original's loss is much lower than the shuffled copy's. Shuffling also removes the
  narrative order a model may legitimately use, so a large gap is an upper bound on
  memorisation, and a small one (within the margin) rules it out as a driver of the losses;
- the breakdown past T should appear on both: if the `loss_breakdown` verdict is the same on
  the shuffled copy, the finding does not depend on a memorised text.

Example:
    >>> text = "A first.\\n\\nB second.\\n\\nC third.\\n\\nD fourth."
    >>> shuffled = shuffle_paragraphs(text, seed=1)
    >>> sorted(paragraphs(shuffled)) == sorted(paragraphs(text)), shuffled != text
    (True, True)
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from lminf_diag.errors import InvalidArgumentError, TextTooShortError

CONTROLS = ("shuffled",)
_BLANK = re.compile(r"\n(?:[ \t]*\n)+")  # one or more blank lines (indentation of the next line kept)
_JOIN = "\n\n"


def paragraphs(text: str) -> list[str]:
    """The paragraphs of `text`: blocks separated by blank lines, without the separators (empty ones dropped).

    >>> paragraphs("one\\ntwo\\n\\n\\nthree\\n")
    ['one\\ntwo', 'three']
    """
    return [p.strip("\n") for p in _BLANK.split(text) if p.strip()]


def shuffle_paragraphs(text: str, seed: int = 0) -> str:
    """A copy of `text` with its paragraphs in a seeded random order, joined by one blank line.

    The multiset of paragraphs is kept exactly; a text of fewer than 2 paragraphs cannot be
    shuffled (InvalidArgumentError). With 2 or more distinct paragraphs the order always
    changes (a permutation equal to the original is redrawn).
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a string, got {type(text).__name__}")
    paras = paragraphs(text)
    if len(paras) < 2:
        raise InvalidArgumentError(
            f"the text has {len(paras)} paragraph(s) (blocks separated by blank lines); "
            "at least 2 are needed "
            "to shuffle: pass a longer text, or a text with blank lines between paragraphs"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paras))
    for _ in range(20):  # a permutation that leaves the text as it was is no control
        if [paras[i] for i in order] != paras:
            break
        order = rng.permutation(len(paras))
    return _JOIN.join(paras[i] for i in order)


def shuffled_window(tokenizer: Any, text: str, length: int, seed: int = 0, **window: Any) -> Any:
    """(1, length) token ids of a paragraph-shuffled copy of the text's first `length` tokens.

    The paragraphs that the original window covers (the smallest prefix of whole paragraphs with
    at least `length` tokens) are shuffled among themselves, so the control reads about the same
    paragraphs as the original window, in another order. `window` goes to `data.token_window`
    (bos=...). TextTooShortError when the text has fewer than `length` tokens.
    """
    from lminf_diag.data import token_window

    paras = paragraphs(text)
    counts = np.cumsum(
        [len(tokenizer(p + _JOIN, add_special_tokens=False, verbose=False)["input_ids"]) for p in paras]
    )
    k = int(np.searchsorted(counts, length)) + 2  # a little slack: tokenisation at the joins differs
    if k >= len(paras) and (not len(counts) or counts[-1] < length):
        raise TextTooShortError(
            f"the text has about {int(counts[-1]) if len(counts) else 0} tokens, fewer than the {length} a "
            "shuffled window needs; pass a longer text or a smaller length"
        )
    while True:
        part = paras[: min(k, len(paras))]
        copy = shuffle_paragraphs(_JOIN.join(part), seed) if len(part) >= 2 else part[0]
        try:
            return token_window(tokenizer, copy, length, **window)
        except TextTooShortError:
            if k >= len(paras):
                raise
            k += 2


__all__ = ["CONTROLS", "paragraphs", "shuffle_paragraphs", "shuffled_window"]
