"""Passkey retrieval prompts and scoring (pure functions; no model needed).

The protocol of Mohtashami & Jaggi (2023), as used by LM-Infinite's reference code: an
instruction, a haystack of filler sentences with one "needle" sentence holding a 5-digit key,
then the question. The answer is correct when the first integer the model writes is the key.

    <INSTRUCTION>\\n<haystack before>\\n<needle>\\n<haystack after>\\n<QUESTION>

Differences from the reference code, on purpose: the needle sits at the sentence boundary
nearest the requested depth (the reference cuts the filler at a character count, mid-word),
the prompt length is counted in tokens (not characters), and any text (a book) can replace
the filler. The question ends without a trailing space, as in the reference code: a trailing
space is a token of its own for byte-level BPE tokenizers and makes the answer harder.
The reference scripts draw 200 prompts per length with keys up to 10^7; here the default is
50 prompts per length (`DEFAULT_TRIALS`) with 5-digit keys, so a run fits a CPU.

Depths: by default every prompt draws its own depth, uniform in [0, 1] as in the reference
protocol, from a seed (`trial_depth(seed, length, trial)`), so every prompt is reproducible
and adding trials keeps the prompts already drawn. Fixed depths remain available: prompt t of
a length then uses `depths[t % len(depths)]`.

Example:
    >>> score_answer(" 12345. Remember", 12345)
    True
    >>> passkey_key(seed=0, length=4096, depth=0.5, trial=0) == passkey_key(0, 4096, 0.5, 0)
    True
    >>> trial_depth(0, 4096, 7) == trial_depth(0, 4096, 7), trial_depth(0, 4096, 2, depths=[0.0, 1.0])
    (True, 0.0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lminf_diag.errors import InvalidArgumentError, TextTooShortError

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_INT = re.compile(r"\d+")
MAX_GAP = 8  # tokens a prompt may fall short of its length before the last sentence is cut at a word
DEFAULT_TRIALS = 50  # prompts per length by default (the reference scripts use 200)
_DEPTH_STREAM = 7919  # separates the depth draws from the key draws of `passkey_key`


@dataclass(frozen=True, eq=False)
class PasskeyPrompt:
    """One passkey prompt, tokenized.

    input_ids:    (1, n) long tensor, n <= the requested length (BOS included when the
                  tokenizer adds one by default).
    key:          the number hidden in the needle.
    depth:        the requested depth (fraction of the haystack before the needle).
    needle_start: token index of the needle's first token in input_ids.
    actual_depth: haystack characters before the needle / all haystack characters.
    needle_end:   token index one past the needle's last token: the needle is
                  input_ids[0, needle_start:needle_end] (-1 when unknown).
    """

    input_ids: torch.Tensor
    key: int
    depth: float
    needle_start: int
    actual_depth: float
    needle_end: int = -1

    @property
    def n_tokens(self) -> int:
        """Prompt length in tokens."""
        return int(self.input_ids.shape[1])


def passkey_key(seed: int, length: int, depth: float, trial: int, digits: int = 5) -> int:
    """The key of one (length, depth, trial) cell: deterministic, independent of the grid's other cells.

    Drawn with `numpy.random.default_rng([seed, length, round(depth * 10000), trial])`, uniform
    over the `digits`-digit numbers (10000..99999 by default), so adding lengths or depths to a
    run keeps the keys of the cells already done.

    >>> passkey_key(0, 1024, 0.25, 0) == passkey_key(0, 1024, 0.25, 0)
    True
    >>> 10000 <= passkey_key(1, 2048, 1.0, 3) <= 99999
    True
    """
    if digits < 1:
        raise InvalidArgumentError(f"digits must be >= 1, got {digits}.")
    rng = np.random.default_rng([int(seed), int(length), int(round(float(depth) * 10000)), int(trial)])
    return int(rng.integers(10 ** (digits - 1), 10**digits))


def trial_depth(seed: int, length: int, trial: int, depths: Sequence[float] | None = None) -> float:
    """The needle depth of prompt `trial` of a length: seeded uniform in [0, 1), or fixed depths in turn.

    depths=None (the default protocol): drawn with
    `numpy.random.default_rng([seed, length, trial, 7919]).random()`, independent of every other
    prompt, so adding trials or lengths keeps the depths already drawn. With fixed `depths`,
    prompt t uses `depths[t % len(depths)]` (a balanced grid when trials is a multiple of it).

    >>> trial_depth(0, 1024, 0) == trial_depth(0, 1024, 0) != trial_depth(0, 1024, 1)
    True
    >>> [trial_depth(0, 1024, t, depths=[0.0, 0.5, 1.0]) for t in range(4)]
    [0.0, 0.5, 1.0, 0.0]
    """
    if depths is not None:
        if len(depths) == 0:
            raise InvalidArgumentError(
                "depths must hold at least one fraction, or be None for random depths."
            )
        return float(depths[int(trial) % len(depths)])
    rng = np.random.default_rng([int(seed), int(length), int(trial), _DEPTH_STREAM])
    return float(rng.random())


def score_answer(generated_text: str, key: int) -> bool:
    """True when the first integer (regex `\\d+`) in the generated text equals the key.

    >>> score_answer("12345.", 12345), score_answer("The key is 1234 5", 12345)
    (True, False)
    >>> score_answer("no digits", 12345)
    False
    """
    match = _INT.search(generated_text)
    return match is not None and int(match.group()) == int(key)


def haystack_sentences(haystack: str) -> list[str]:
    """The sentences a haystack is made of: "filler" (the reference filler) or a book's text.

    A bundled book name or an existing file is read with `lminf_diag.data.load_text`; any other
    string with whitespace is taken as the text itself. Whitespace (line breaks included) is collapsed.

    >>> haystack_sentences("filler")[:2]
    ['The grass is green.', 'The sky is blue.']
    """
    from lminf_diag.data import list_books, load_text

    name = haystack[:-4] if haystack.endswith(".txt") else haystack
    if haystack == "filler":
        text = FILLER
    elif name in list_books() or Path(haystack).expanduser().is_file():
        text = load_text(haystack)[0]
    elif any(c.isspace() for c in haystack.strip()):
        text = haystack
    else:
        text = load_text(haystack)[0]  # raises: unknown name, with the list of bundled books
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(text)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise TextTooShortError("The haystack text is empty; pass 'filler', a book name or a text file.")
    return sentences


def _adds_bos(tokenizer: Any) -> list[int]:
    from lminf_diag.data import _adds_bos as adds

    return [tokenizer.bos_token_id] if adds(tokenizer) else []


def _encode(tokenizer: Any, text: str, marks: list[int]) -> tuple[list[int], list[int]]:
    """Token ids of `text` and, for each character position in `marks`, the first token ending after it."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        enc, offsets = tokenizer(text, add_special_tokens=False, verbose=False), None
    ids = list(enc["input_ids"])
    index = []
    for m in marks:
        if offsets is not None:
            index.append(next((i for i, (_, end) in enumerate(offsets) if end > m), len(ids)))
        else:
            index.append(len(tokenizer(text[:m], add_special_tokens=False, verbose=False)["input_ids"]))
    return ids, index


@dataclass
class _Layout:
    """The pieces of one candidate prompt: haystack units and where the needle goes."""

    units: list[str]
    depth: float
    needle: str

    def render(self) -> tuple[str, list[int]]:
        """(text, [haystack start, needle start, needle end, question start, needle's last
        character]) in characters."""
        ends = np.cumsum([len(u) + 1 for u in self.units]) if self.units else np.zeros(0)
        total = float(ends[-1]) if len(ends) else 0.0
        bounds = np.concatenate([[0.0], ends])  # character offsets of the cut points between units
        cut = int(np.argmin(np.abs(bounds - self.depth * total)))
        before, after = " ".join(self.units[:cut]), " ".join(self.units[cut:])
        text = INSTRUCTION + "\n"
        hay = len(text)
        text += before + "\n" if before else ""
        n0 = len(text)
        text += self.needle
        n1 = len(text)
        text += "\n" + after if after else ""
        q = len(text) + 1
        return text + "\n" + QUESTION, [hay, n0, n1, q, n1 - 1]


def _fit(layout_for, count, lo: int, hi: int, length: int) -> int:
    """Largest k in [lo, hi] with count(layout_for(k)) <= length (count assumed nondecreasing)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(layout_for(mid)) <= length:
            lo = mid
        else:
            hi = mid - 1
    return lo


def build_passkey_prompt(
    tokenizer: Any, length: int, depth: float, key: int, haystack: str = "filler"
) -> PasskeyPrompt:
    """A passkey prompt of at most `length` tokens (usually at most 8 fewer) with the needle at `depth`.

    depth: fraction of the haystack before the needle, 0 (right after the instruction) to 1
    (right before the question); the needle goes to the sentence boundary nearest it.
    haystack: "filler" (the reference sentences, repeated) or a bundled book name / text file
    (repeated if too short). Whole sentences are used; when the next sentence does not fit and
    more than MAX_GAP (8) tokens are left, its first words are added, so the prompt comes
    within 8 tokens of `length` (within a sentence of the filler, about 5 tokens, usually).

    Example:
        >>> p = build_passkey_prompt(tok, 4096, 0.5, 12345)   # doctest: +SKIP
        >>> p.n_tokens <= 4096, round(p.actual_depth, 2)      # doctest: +SKIP
        (True, 0.5)
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise InvalidArgumentError(f"length must be a positive integer of tokens, got {length!r}.")
    if not 0.0 <= float(depth) <= 1.0:
        raise InvalidArgumentError(f"depth must be a fraction between 0 and 1, got {depth!r}.")
    bos = _adds_bos(tokenizer)
    needle = NEEDLE.format(key=key)
    sentences = haystack_sentences(haystack)

    def count(layout: _Layout) -> int:
        return len(bos) + len(
            tokenizer(layout.render()[0], add_special_tokens=False, verbose=False)["input_ids"]
        )

    base = count(_Layout([], depth, needle))
    if base > length:
        raise InvalidArgumentError(
            f"A passkey prompt needs at least {base} tokens (instruction, needle, question); "
            f"got length={length}. Use a length of at least {base}."
        )
    sample = sentences[:200]
    per_sentence = max(
        1.0, np.mean([len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sample])
    )
    hi = int((length - base) / per_sentence * 1.5) + 2
    pool = sentences * (hi // len(sentences) + 1)
    while count(_Layout(pool[:hi], depth, needle)) <= length:  # the estimate was short: grow
        hi *= 2
        pool = sentences * (hi // len(sentences) + 1)
    k = _fit(lambda n: _Layout(pool[:n], depth, needle), count, 0, hi, length)
    layout = _Layout(pool[:k], depth, needle)
    if length - count(layout) > MAX_GAP and k < len(pool):  # a long sentence left a gap: fill with words
        words = pool[k].split(" ")
        w = _fit(
            lambda n: _Layout(pool[:k] + ([" ".join(words[:n])] if n else []), depth, needle),
            count,
            0,
            max(len(words) - 1, 0),
            length,
        )
        layout = _Layout(pool[:k] + ([" ".join(words[:w])] if w else []), depth, needle)
    text, marks = layout.render()
    ids, (hay, n0, n1, q, last) = _encode(tokenizer, text, marks)
    ids, shift = bos + ids, len(bos)
    if len(ids) > length:  # tokenization was not monotone in the text; drop whole units until it fits
        while len(ids) > length and layout.units:
            layout.units.pop()
            text, marks = layout.render()
            ids, (hay, n0, n1, q, last) = _encode(tokenizer, text, marks)
            ids = bos + ids
    before, after = n0 - hay, max(q - n1, 0)
    actual = before / (before + after) if before + after else float(depth)
    return PasskeyPrompt(
        input_ids=torch.tensor([ids], dtype=torch.long),
        key=int(key),
        depth=float(depth),
        needle_start=n0 + shift,
        actual_depth=float(actual),
        needle_end=last + shift + 1,
    )


__all__ = [
    "DEFAULT_TRIALS",
    "FILLER",
    "INSTRUCTION",
    "NEEDLE",
    "QUESTION",
    "PasskeyPrompt",
    "build_passkey_prompt",
    "haystack_sentences",
    "passkey_key",
    "score_answer",
    "trial_depth",
]
