"""`Comparison`: several traces of the same text (baseline and patched runs) kept together.

Every analyzer accepts a `Trace`, a `Comparison`, a dict of traces or a list of traces and
turns it into an ordered `{label: Trace}` dict with `as_traces`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lminf_diag.capture.trace import TRACE_COLUMNS, Trace, trace_row
from lminf_diag.errors import InvalidArgumentError, RunDirectoryError
from lminf_diag.util.atomic import atomic_write
from lminf_diag.util.html import html_table
from lminf_diag.util.html import text as esc

COMPARISON_FILE = "comparison.json"
COMPARISON_FORMAT = "lminf_diag.comparison"


def _baseline_first(traces: Mapping[str, Trace]) -> dict[str, Trace]:
    """Same items in insertion order, except that "baseline" (if present) moves to the front."""
    out: dict[str, Trace] = {}
    if "baseline" in traces:
        out["baseline"] = traces["baseline"]
    out.update((k, v) for k, v in traces.items() if k != "baseline")
    return out


def as_traces(obj: Trace | Comparison | Mapping[str, Trace] | Iterable[Trace]) -> dict[str, Trace]:
    """Normalize analyzer input to an ordered `{label: Trace}` dict ("baseline" first).

    A dict's keys are the labels; for a Trace or a list the label is `trace.label`.

    >>> from lminf_diag.synthetic import make_trace
    >>> list(as_traces([make_trace(label="lambda", kind="flat"), make_trace()]))
    ['baseline', 'lambda']
    """
    if isinstance(obj, Trace):
        return {obj.label: obj}
    if isinstance(obj, Comparison):
        return _baseline_first(obj.traces)
    if isinstance(obj, Mapping):
        items = list(obj.items())
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        items = [(getattr(t, "label", None), t) for t in obj]
    else:
        raise InvalidArgumentError(
            f"expected a Trace, a Comparison, a dict of traces or a list of traces, got {type(obj).__name__}"
        )
    out: dict[str, Trace] = {}
    for label, trace in items:
        if not isinstance(trace, Trace):
            raise InvalidArgumentError(f"expected Trace objects, got {type(trace).__name__} for {label!r}")
        if not isinstance(label, str) or not label:
            raise InvalidArgumentError(f"trace labels must be non-empty strings, got {label!r}")
        if label in out:
            raise InvalidArgumentError(f"two traces share the label {label!r}; labels must be unique")
        out[label] = trace
    if not out:
        raise InvalidArgumentError("no traces given; pass at least one Trace")
    return _baseline_first(out)


def common_train_len(traces: Mapping[str, Trace], train_len: int | None = None) -> int | None:
    """The training length to use: `train_len` if given, else the one all traces' meta agree on.

    Zero in meta means unknown; None is returned when no trace knows it. Raises
    InvalidArgumentError when traces disagree (pass train_len explicitly then).

    >>> from lminf_diag.synthetic import make_trace
    >>> common_train_len({"baseline": make_trace(train_len=128)})
    128
    """
    if train_len is not None:
        if int(train_len) <= 0:
            raise InvalidArgumentError(f"train_len={train_len}; must be a positive number of tokens")
        return int(train_len)
    known = {int(t.meta.train_len) for t in traces.values() if int(t.meta.train_len) > 0}
    if len(known) > 1:
        raise InvalidArgumentError(
            f"traces disagree on the training length ({sorted(known)}); pass train_len explicitly"
        )
    return known.pop() if known else None


def _safe_train_len(traces: Mapping[str, Trace]) -> int | None:
    try:
        return common_train_len(traces)
    except InvalidArgumentError:  # traces disagree: a repr shows none rather than raising
        return None


def _source_line(traces: Mapping[str, Trace], train_len: int | None) -> str:
    first = next(iter(traces.values()))
    bits = [f"{first.n_tokens} tokens"]
    if first.meta.text_source:
        bits.append(f"of {first.meta.text_source}")
    if first.meta.model:
        bits.append(f"model {first.meta.model}")
    if train_len:
        bits.append(f"training length {train_len}")
    return ", ".join(bits)


@dataclass(eq=False)
class Comparison:
    """Traces of one text under several settings, keyed by label ("baseline" first when present).

    >>> from lminf_diag.synthetic import make_trace
    >>> cmp = Comparison({"lambda": make_trace(kind="flat", label="lambda"), "baseline": make_trace()})
    >>> cmp.labels, cmp.patched.label, cmp.train_len
    (['baseline', 'lambda'], 'lambda', 128)

    It reads like a dict of traces: `cmp["lambda"]` is that label's Trace (a KeyError names the
    labels there are), `"lambda" in cmp`, `len(cmp)`, and iterating gives the labels:

    >>> cmp["lambda"].label, "window" in cmp, list(cmp), len(cmp)
    ('lambda', False, ['baseline', 'lambda'], 2)
    """

    traces: dict[str, Trace]

    def __post_init__(self) -> None:
        self.traces = as_traces(self.traces)

    def __getitem__(self, label: str) -> Trace:
        try:
            return self.traces[label]
        except (KeyError, TypeError):
            raise KeyError(f"no run labelled {label!r}; this comparison holds {self.labels}") from None

    def __contains__(self, label: object) -> bool:
        return label in self.traces

    def __iter__(self) -> Iterator[str]:
        return iter(self.traces)

    def __len__(self) -> int:
        return len(self.traces)

    def keys(self) -> KeysView[str]:
        return self.traces.keys()

    def values(self) -> ValuesView[Trace]:
        return self.traces.values()

    def items(self) -> ItemsView[str, Trace]:
        return self.traces.items()

    def __repr__(self) -> str:
        """One line: labels, tokens, training length, model and each label's mean loss."""
        first = next(iter(self.traces.values()))
        parts = [f"<Comparison labels={self.labels!r}", f"n_tokens={first.n_tokens}"]
        tl = _safe_train_len(self.traces)
        if tl:
            parts.append(f"T={tl}")
        if first.meta.model:
            parts.append(f"model={first.meta.model!r}")
        loss = ", ".join(f"{lab} {trace.mean_nll():.3g}" for lab, trace in self.traces.items())
        line = " ".join(parts) + f"; mean NLL {loss}"
        return (line if len(line) < 279 else line[:276] + "...") + ">"

    def _repr_html_(self) -> str:
        """Jupyter: one row per label (tokens, patch, mean loss within and past T, seconds)."""
        tl = _safe_train_len(self.traces)
        rows = [trace_row(trace, tl) for trace in self.traces.values()]
        head = f"<div><strong>Comparison</strong> <small>{esc(_source_line(self.traces, tl))}</small>"
        return head + html_table(TRACE_COLUMNS, rows) + "</div>"

    @property
    def baseline(self) -> Trace | None:
        return self.traces.get("baseline")

    @property
    def patched(self) -> Trace | None:
        """The first trace that is not the baseline, or None."""
        return next((t for k, t in self.traces.items() if k != "baseline"), None)

    @property
    def labels(self) -> list[str]:
        return list(self.traces)

    @property
    def train_len(self) -> int | None:
        """Training length from the traces' meta (None if unknown; raises if they disagree)."""
        return common_train_len(self.traces)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write one trace subdirectory per label plus `comparison.json` (written last).

        >>> import tempfile
        >>> from lminf_diag.synthetic import make_comparison
        >>> d = make_comparison(n=64, train_len=16).save(tempfile.mkdtemp())
        >>> Comparison.load(d).labels
        ['baseline', 'lambda']
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        dirs: dict[str, str] = {}
        used: set[str] = set()
        for label, trace in self.traces.items():
            sub = re.sub(r"[^A-Za-z0-9_.-]", "_", label).lstrip(".") or "trace"
            base, i = sub, 1
            while sub.lower() in used:
                i += 1
                sub = f"{base}_{i}"
            used.add(sub.lower())
            trace.save(out / sub)
            dirs[label] = sub
        info: dict[str, Any] = {
            "format": COMPARISON_FORMAT,
            "labels": self.labels,
            "dirs": dirs,
            "train_len": self.train_len,
        }
        text = json.dumps(info, indent=2).encode()
        atomic_write(out / COMPARISON_FILE, lambda f: f.write(text))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Comparison:
        """Read a comparison written by `save`; RunDirectoryError when the directory is not one.

        >>> Comparison.load("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lminf_diag.errors.RunDirectoryError: ...
        """
        src = Path(directory)
        path = src / COMPARISON_FILE
        if not path.is_file():
            raise RunDirectoryError(
                f"{src}: missing {COMPARISON_FILE}; not a comparison directory (Comparison.save)"
            )
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirectoryError(f"{path}: unreadable or not JSON ({e})") from e
        if not isinstance(info, dict) or info.get("format") != COMPARISON_FORMAT:
            raise RunDirectoryError(f"{path}: not a comparison file (expected format {COMPARISON_FORMAT!r})")
        dirs = info.get("dirs")
        labels = info.get("labels")
        if not isinstance(dirs, dict) or not isinstance(labels, list) or set(labels) != set(dirs):
            raise RunDirectoryError(f"{path}: 'labels' and 'dirs' entries are missing or inconsistent")
        traces = {}
        for label in labels:
            sub = str(dirs[label])
            if "/" in sub or "\\" in sub or sub in ("", ".", ".."):
                raise RunDirectoryError(f"{path}: bad subdirectory name {sub!r} for label {label!r}")
            traces[label] = Trace.load(src / sub)
        return cls(traces)
