"""Independent token windows: the unit of replication of every key figure.

One window of one book is an anecdote. `plan_windows` picks K windows of `length` tokens that
share no token: one per text in turn (different books first), then later non-overlapping
offsets of the same texts. `Replicate` holds one `Comparison` per window (the same labels in
each); every analyzer accepts it and takes its intervals between windows.

Example:
    >>> from lminf_diag.synthetic import make_comparison
    >>> rep = Replicate([make_comparison(n=64, train_len=16, seed=s) for s in range(3)])
    >>> rep.labels, len(rep), rep.train_len
    (['baseline', 'lambda'], 3, 16)
    >>> [len(w) for w in as_windows(rep)]
    [2, 2, 2]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lminf_diag.capture.comparison import Comparison, as_traces, common_train_len
from lminf_diag.capture.trace import TRACE_COLUMNS, Trace, trace_row
from lminf_diag.errors import InvalidArgumentError, RunDirectoryError, TextTooShortError
from lminf_diag.util.atomic import atomic_write
from lminf_diag.util.html import html_table
from lminf_diag.util.html import text as esc

REPLICATE_FILE = "replicate.json"
REPLICATE_FORMAT = "lminf_diag.replicate"


@dataclass(frozen=True)
class Window:
    """Where one window comes from: a text (book name or path) and a token offset in it."""

    index: int
    text: str
    offset: int
    length: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_windows(
    tokenizer: Any, texts: Sequence[str], length: int, k: int, *, repeat: bool = False
) -> list[tuple[Window, Any]]:
    """K windows of `length` tokens, as `(Window, ids (1, length))`, sharing no token.

    Window i reads text i mod len(texts) at the next free offset of that text (offsets 0,
    length, 2*length, ...). Texts too short for another window are skipped; when no text has
    room left, `repeat=True` reuses the texts with copies joined (windows then overlap in
    content, which the window records say), otherwise TextTooShortError says how many fit.
    """
    from lminf_diag.data import load_text, token_window

    if k < 1:
        raise InvalidArgumentError(f"windows={k}; at least 1 window is needed (4 or more for an interval)")
    if not texts:
        raise InvalidArgumentError("no texts given to cut windows from")
    loaded = []
    for name in texts:
        text, _source = load_text(name)
        n_tok = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        loaded.append((name, text, n_tok))
    used = [0] * len(loaded)  # windows already cut from each text
    out: list[tuple[Window, Any]] = []
    i = 0
    while len(out) < k:
        progress = False
        for t, (name, text, n_tok) in enumerate(loaded):
            if len(out) >= k:
                break
            offset = used[t] * length
            if offset + length <= n_tok:
                ids = token_window(tokenizer, text, length, offset=offset)
                out.append((Window(i, str(name), offset, length), ids))
                used[t] += 1
                i += 1
                progress = True
        if not progress:
            break
    if len(out) < k:
        if not repeat:
            sizes = ", ".join(f"{name}: {n_tok}" for name, _t, n_tok in loaded)
            head = (f"The text has {loaded[0][2]} tokens" if len(loaded) == 1 else f"The texts have ({sizes}) tokens")
            raise TextTooShortError(
                f"{head}: only {len(out)} windows of {length} tokens fit without sharing a token, {k} asked. "
                "Pass more or longer texts, fewer windows (--windows), a shorter length, or --repeat (windows "
                "of repeated text: replicates of the text, not independent texts)."
            )
        for j in range(len(out), k):
            name, text, n_tok = loaded[j % len(loaded)]
            offset = (j // len(loaded)) * max(1, length // 3) % max(1, n_tok)
            ids = token_window(tokenizer, text, length, offset=offset, repeat=True)
            out.append((Window(j, f"{name} (repeated)", offset, length), ids))
    return out


@dataclass(eq=False)
class Replicate:
    """One `Comparison` per independent window, the same labels in each (baseline first)."""

    windows: list[Comparison]

    def __post_init__(self) -> None:
        self.windows = [w if isinstance(w, Comparison) else Comparison(as_traces(w)) for w in self.windows]
        if not self.windows:
            raise InvalidArgumentError("a Replicate needs at least one window")
        first = self.windows[0].labels
        for i, w in enumerate(self.windows):
            if w.labels != first:
                raise InvalidArgumentError(
                    f"window {i} has labels {w.labels}, window 0 has {first}; every window needs the same runs"
                )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Comparison:
        return self.windows[i]

    def __iter__(self) -> Iterator[Comparison]:
        """The windows, in order (each a `Comparison`)."""
        return iter(self.windows)

    def __contains__(self, label: object) -> bool:
        """`"lambda" in rep`: whether every window holds that label."""
        return label in self.labels

    def __repr__(self) -> str:
        """One line: windows, labels, tokens per window, T, model and each label's mean loss.

        >>> from lminf_diag.synthetic import make_comparison
        >>> Replicate([make_comparison(n=64, train_len=16, seed=s) for s in range(2)])
        <Replicate windows=2 labels=['baseline', 'lambda'] n_tokens=64 T=16 model='synthetic'; mean NLL baseline 2.33, lambda 2>
        """
        first = self.windows[0].traces[self.labels[0]]
        parts = [f"<Replicate windows={len(self)}", f"labels={self.labels!r}", f"n_tokens={first.n_tokens}"]
        tl = self._safe_train_len()
        if tl:
            parts.append(f"T={tl}")
        if first.meta.model:
            parts.append(f"model={first.meta.model!r}")
        loss = ", ".join(
            f"{lab} {np.nanmean([t.mean_nll() for t in self.label(lab)]):.3g}" for lab in self.labels
        )
        line = " ".join(parts) + f"; mean NLL {loss}"
        return (line if len(line) < 279 else line[:276] + "...") + ">"

    def _repr_html_(self) -> str:
        """Jupyter: one row per window and label (tokens, patch, mean loss within and past T)."""
        tl = self._safe_train_len()
        rows = [[i, *trace_row(t, tl)] for i, w in enumerate(self.windows) for t in w.traces.values()]
        head = f"<div><strong>Replicate</strong> <small>{esc(f'{len(self)} windows, training length {tl}')}</small>"
        return head + html_table(["window", *TRACE_COLUMNS], rows) + "</div>"

    def _safe_train_len(self) -> int | None:
        try:
            return self.train_len
        except InvalidArgumentError:
            return None

    @property
    def labels(self) -> list[str]:
        return self.windows[0].labels

    @property
    def train_len(self) -> int | None:
        return windows_train_len([w.traces for w in self.windows])

    def label(self, label: str) -> list[Trace]:
        """The traces of one label, one per window."""
        return [w.traces[label] for w in self.windows]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """One comparison folder per window (`w00`, `w01`, ...) plus `replicate.json`, written last."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        dirs = []
        for i, w in enumerate(self.windows):
            w.save(out / f"w{i:02d}")
            dirs.append(f"w{i:02d}")
        info = {"format": REPLICATE_FORMAT, "labels": self.labels, "windows": dirs}
        text = json.dumps(info, indent=2).encode()
        atomic_write(out / REPLICATE_FILE, lambda f: f.write(text))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Replicate:
        """Read a replicate written by `save` (RunDirectoryError when the folder is not one)."""
        src = Path(directory)
        path = src / REPLICATE_FILE
        if not path.is_file():
            raise RunDirectoryError(f"{src}: missing {REPLICATE_FILE}; not a replicate folder (Replicate.save)")
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunDirectoryError(f"{path}: unreadable or not JSON ({e})") from e
        if not isinstance(info, dict) or info.get("format") != REPLICATE_FORMAT:
            raise RunDirectoryError(f"{path}: not a replicate file (expected format {REPLICATE_FORMAT!r})")
        subs = info.get("windows") or []
        if any(not isinstance(s, str) or "/" in s or s in ("", ".", "..") for s in subs):
            raise RunDirectoryError(f"{path}: bad window folder names {subs}")
        return cls([Comparison.load(src / s) for s in subs])


def as_windows(obj: Any) -> list[dict[str, Trace]]:
    """Normalise analyzer input to a list of windows, each an ordered `{label: Trace}` dict.

    A Trace, a Comparison or a dict of traces is one window; a `Replicate` or a list of
    Comparisons (or of dicts) is one window each. Every window must hold the same labels.

    >>> from lminf_diag.synthetic import make_comparison
    >>> len(as_windows(make_comparison(n=64, train_len=16)))
    1
    """
    if isinstance(obj, Replicate):
        return [dict(w.traces) for w in obj.windows]
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, Mapping, Trace, Comparison)):
        items = list(obj)
        if items and all(isinstance(x, (Comparison, Mapping)) for x in items):
            return [dict(w.traces) for w in Replicate(items).windows]
    return [as_traces(obj)]


def window_labels(windows: list[dict[str, Trace]]) -> list[str]:
    """The labels every window holds, baseline first (InvalidArgumentError when they differ)."""
    first = list(windows[0])
    for i, w in enumerate(windows):
        if list(w) != first:
            raise InvalidArgumentError(f"window {i} has labels {list(w)}, window 0 has {first}")
    return first


def windows_train_len(windows: list[dict[str, Trace]], train_len: int | None = None) -> int | None:
    """The common training length of all windows' traces (`common_train_len` over them all)."""
    merged = {f"{i}:{lab}": t for i, w in enumerate(windows) for lab, t in w.items()}
    return common_train_len(merged, train_len)


__all__ = ["Replicate", "Window", "as_windows", "plan_windows", "window_labels", "windows_train_len"]
