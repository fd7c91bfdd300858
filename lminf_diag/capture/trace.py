"""`Trace`: everything one capture pass recorded, as plain numpy arrays.

A trace never holds an n x n matrix: per (layer, head, query position) statistics, a
running-max logit profile for a few query rows, hidden states of a few layers and the
per-token loss. Baseline and patched runs produce traces of identical shape and meaning.

Shapes (L = captured layers, H = captured heads, N = tokens, B = distance bins,
R = profile rows, P = profile distances, K = hidden layers, M = hidden positions, D = hidden size):

    entropy, max_logit, lse, sink_mass   (L, H, N) float32
    dist_mass                            (L, H, N, B) float16, rows sum to 1
    logit_profile                        (L, H, R, P) float32, NaN where P > row position
    profile_band                         (L, H, R, P) float32, max logit over distances (d_{j-1}, d_j]
    hidden                               (K, M, D) float16
    nll                                  (N,) float32, nll[0] = NaN, nll[t] = -log p(x_t | x_<t)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lminf_diag.errors import InvalidArgumentError, RunDirectoryError
from lminf_diag.util.atomic import atomic_write
from lminf_diag.util.html import html_table
from lminf_diag.util.jsonsafe import json_default

if TYPE_CHECKING:
    import pandas as pd

ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"
TRACE_FORMAT = "lminf_diag.trace"
TRACE_FORMAT_VERSION = 1
# Every array field of `Trace`, in declaration order (all fields except `meta`).
ARRAY_FIELDS = (
    "layers", "heads", "positions", "entropy", "max_logit", "lse", "sink_mass", "dist_mass",
    "dist_edges", "profile_rows", "profile_dist", "logit_profile", "hidden_layers",
    "hidden_positions", "hidden", "nll", "profile_band",
)  # fmt: skip
OPTIONAL_FIELDS = ("profile_band",)  # absent from traces saved by earlier versions: NaN-filled on load
STATS = ("entropy", "max_logit", "lse", "sink_mass")  # the (L, H, N) statistics to_frame accepts


@dataclass
class TraceMeta:
    """Where a trace came from. `patch` is None for the baseline, else the patch settings."""

    model: str = ""
    text_source: str = ""
    n_tokens: int = 0
    train_len: int = 0
    label: str = "baseline"  # "baseline", "lambda", "mask_only", "cap_only", "window", or user label
    patch: dict[str, Any] | None = None  # {"mode", "n_global", "n_local", "limit"}
    sink_tokens: int = 4
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trace:
    """Arrays of one capture pass; see the module docstring for shapes."""

    meta: TraceMeta
    layers: np.ndarray  # (L,) int, model layer indices
    heads: np.ndarray  # (H,) int, query-head indices
    positions: np.ndarray  # (N,) int, measured query positions (0..n-1, or every stride-th + profile rows)
    entropy: np.ndarray  # (L, H, N) nats
    max_logit: np.ndarray  # (L, H, N) largest scaled pre-softmax logit of the row
    lse: np.ndarray  # (L, H, N) log-sum-exp of the row
    sink_mass: np.ndarray  # (L, H, N) attention mass on keys < meta.sink_tokens
    dist_mass: np.ndarray  # (L, H, N, B) mass per distance bin
    dist_edges: np.ndarray  # (B + 1,) bin edges in tokens: bin b holds edges[b] <= d < edges[b+1]
    profile_rows: np.ndarray  # (R,) query positions of the logit profile rows
    profile_dist: np.ndarray  # (P,) distances (tokens) at which the running max is sampled
    logit_profile: np.ndarray  # (L, H, R, P) running max over distance <= d of the row's logits
    hidden_layers: np.ndarray  # (K,) hidden-state indices (0 = embeddings, i = after layer i)
    hidden_positions: np.ndarray  # (M,) positions of the stored hidden states
    hidden: np.ndarray  # (K, M, D) float16
    nll: np.ndarray  # (n_tokens,) per-token negative log-likelihood, nll[0] = NaN (all tokens, not strided)
    profile_band: np.ndarray | None = None  # (L, H, R, P) max logit over distances (d_{j-1}, d_j]; NaN: none

    def __post_init__(self) -> None:
        if self.profile_band is None or np.shape(self.profile_band) != np.shape(self.logit_profile):
            self.profile_band = np.full(np.shape(self.logit_profile), np.nan, dtype=np.float32)

    @property
    def n_tokens(self) -> int:
        return int(self.meta.n_tokens or self.nll.shape[0] or self.positions.shape[0])

    @property
    def label(self) -> str:
        return self.meta.label

    # ------------------------------------------------------------------ display

    def mean_nll(self, start: int = 0, stop: int | None = None) -> float:
        """Mean per-token loss (nats) over positions start..stop-1, NaN ignored (NaN when none).

        >>> from lminf_diag.synthetic import make_trace
        >>> round(make_trace(n=64, train_len=16).mean_nll(0, 16), 3)
        2.0
        """
        arr = np.asarray(self.nll, dtype=np.float64)[start:stop]
        finite = arr[np.isfinite(arr)]
        return float(finite.mean()) if finite.size else float("nan")

    def __repr__(self) -> str:
        """One line: label, tokens, T, model, captured layers/heads/rows, patch, mean loss.

        >>> from lminf_diag.synthetic import make_trace
        >>> make_trace(n=64, train_len=16)
        <Trace 'baseline' n_tokens=64 T=16 model='synthetic' layers=2 heads=3 rows=64 mean NLL 2.33>
        """
        m = self.meta
        parts = [f"<Trace {self.label!r}", f"n_tokens={self.n_tokens}"]
        if m.train_len:
            parts.append(f"T={m.train_len}")
        if m.model:
            parts.append(f"model={m.model!r}")
        parts.append(f"layers={np.asarray(self.layers).size} heads={np.asarray(self.heads).size}")
        parts.append(f"rows={np.asarray(self.positions).size}")
        if m.patch:
            parts.append(f"patch={_patch_text(m.patch)}")
        line = " ".join(parts) + f" mean NLL {self.mean_nll():.3g}"
        return (line if len(line) < 279 else line[:276] + "...") + ">"

    def _repr_html_(self) -> str:
        """Jupyter: one table row (tokens, patch, mean loss within and past T, seconds)."""
        return html_table(TRACE_COLUMNS, [trace_row(self, int(self.meta.train_len) or None)], "Trace")

    # ------------------------------------------------------------------ I/O and views

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `arrays.npz` and `meta.json` into `directory` (created if needed), atomically.

        Each file is written to a temporary file in the same directory and moved into place
        with `os.replace`; `meta.json` goes last, so a directory with a `meta.json` is complete.
        dtypes are kept as they are (dist_mass and hidden stay float16).

        >>> import tempfile
        >>> from lminf_diag.synthetic import make_trace
        >>> t = make_trace(n=64, train_len=16)
        >>> d = t.save(tempfile.mkdtemp())
        >>> Trace.load(d).entropy.shape
        (2, 3, 64)
        """
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise RunDirectoryError(f"{out}: exists and is not a directory; Trace.save needs a directory")
        out.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.asarray(getattr(self, name)) for name in ARRAY_FIELDS}
        meta = {
            "format": TRACE_FORMAT,
            "format_version": TRACE_FORMAT_VERSION,
            "meta": dataclasses.asdict(self.meta),
            "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
        }
        atomic_write(out / ARRAYS_FILE, lambda f: np.savez(f, **arrays))
        text = json.dumps(meta, indent=2, default=json_default).encode()
        atomic_write(out / META_FILE, lambda f: f.write(text))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Trace:
        """Read a trace written by `save`; raise RunDirectoryError when the directory is not one.

        >>> Trace.load("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lminf_diag.errors.RunDirectoryError: ...
        """
        src = Path(directory)
        if not src.is_dir():
            raise RunDirectoryError(
                f"{src}: not a directory; expected a trace directory holding {META_FILE} and {ARRAYS_FILE}"
            )
        for name in (META_FILE, ARRAYS_FILE):
            if not (src / name).is_file():
                raise RunDirectoryError(
                    f"{src}: missing {name}; a trace directory holds {META_FILE} and {ARRAYS_FILE} (written by Trace.save)"
                )
        try:
            info = json.loads((src / META_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirectoryError(f"{src / META_FILE}: unreadable or not JSON ({e})") from e
        if not isinstance(info, dict) or info.get("format") != TRACE_FORMAT:
            raise RunDirectoryError(
                f"{src / META_FILE}: not a trace meta file (expected format {TRACE_FORMAT!r})"
            )
        meta_fields = {f.name for f in dataclasses.fields(TraceMeta)}
        raw_meta = info.get("meta")
        if not isinstance(raw_meta, dict) or set(raw_meta) - meta_fields:
            unknown = sorted(set(raw_meta) - meta_fields) if isinstance(raw_meta, dict) else raw_meta
            raise RunDirectoryError(
                f"{src / META_FILE}: bad 'meta' entry; unknown TraceMeta fields {unknown}"
            )
        try:
            with np.load(src / ARRAYS_FILE, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise RunDirectoryError(f"{src / ARRAYS_FILE}: unreadable npz archive ({e})") from e
        missing = [n for n in ARRAY_FIELDS if n not in arrays and n not in OPTIONAL_FIELDS]
        if missing:
            raise RunDirectoryError(f"{src / ARRAYS_FILE}: missing arrays {missing}")
        shapes = info.get("arrays", {})
        for name in ARRAY_FIELDS:
            want = shapes.get(name, {}).get("shape") if name in arrays else None
            if want is not None and list(arrays[name].shape) != list(want):
                raise RunDirectoryError(
                    f"{src}: array {name!r} has shape {arrays[name].shape}, meta.json says {tuple(want)}"
                )
        return cls(meta=TraceMeta(**raw_meta), **{n: arrays[n] for n in ARRAY_FIELDS if n in arrays})

    def to_frame(self, stat: str = "entropy", reduce: str | None = "heads") -> pd.DataFrame:
        """One (L, H, N) statistic in long format.

        reduce=None -> columns layer, head, position, value, label (L*H*N rows);
        "heads" -> layer, position, value, label (mean over heads, NaN ignored);
        "all" -> position, value, label (mean over layers and heads).
        `layer` and `head` are model indices (`self.layers`, `self.heads`).

        >>> from lminf_diag.synthetic import make_trace
        >>> make_trace(n=64, layers=2).to_frame("entropy", reduce="heads").shape
        (128, 4)
        """
        import pandas as pd

        if stat not in STATS:
            raise InvalidArgumentError(f"stat={stat!r}; accepted: {', '.join(STATS)}")
        arr = np.asarray(getattr(self, stat), dtype=np.float64)  # (L, H, N)
        n_l, n_h, n = arr.shape
        pos = np.asarray(self.positions)
        if reduce is None:
            cols = {
                "layer": np.repeat(np.asarray(self.layers), n_h * n),
                "head": np.tile(np.repeat(np.asarray(self.heads), n), n_l),
                "position": np.tile(pos, n_l * n_h),
                "value": arr.reshape(-1),
            }
        elif reduce == "heads":
            cols = {
                "layer": np.repeat(np.asarray(self.layers), n),
                "position": np.tile(pos, n_l),
                "value": _nanmean(arr, axis=1).reshape(-1),
            }
        elif reduce == "all":
            cols = {"position": pos, "value": _nanmean(arr, axis=(0, 1))}
        else:
            raise InvalidArgumentError(f"reduce={reduce!r}; accepted: None, 'heads', 'all'")
        frame = pd.DataFrame(cols)
        frame["label"] = self.label
        return frame

    def summary_dict(self) -> dict[str, Any]:
        """Plain-Python overview: n_tokens, label, layers, train_len (+ model, heads, hidden layers).

        >>> from lminf_diag.synthetic import make_trace
        >>> make_trace(n=64, train_len=16).summary_dict()["train_len"]
        16
        """
        return {
            "label": self.label,
            "model": self.meta.model,
            "n_tokens": self.n_tokens,
            "train_len": int(self.meta.train_len),
            "layers": [int(x) for x in np.asarray(self.layers)],
            "heads": [int(x) for x in np.asarray(self.heads)],
            "hidden_layers": [int(x) for x in np.asarray(self.hidden_layers)],
            "profile_rows": int(np.asarray(self.profile_rows).shape[0]),
        }


TRACE_COLUMNS = ("label", "tokens", "patch", "NLL within T", "NLL past T", "layers", "heads", "seconds")


def _patch_text(patch: dict[str, Any] | None) -> str:
    """'lambda(n_global=4, n_local=128)' from a trace's patch settings; '' for the baseline."""
    if not patch:
        return ""
    keys = [k for k in ("n_global", "n_local", "limit") if patch.get(k) is not None]
    return f"{patch.get('mode', 'patch')}(" + ", ".join(f"{k}={patch[k]}" for k in keys) + ")"


def trace_row(trace: Trace, train_len: int | None) -> list[Any]:
    """The display row of one trace under `TRACE_COLUMNS` (losses in nats, 3 digits)."""
    within = trace.mean_nll(train_len // 2, train_len) if train_len else trace.mean_nll()
    past = trace.mean_nll(train_len) if train_len else float("nan")
    return [
        trace.label,
        trace.n_tokens,
        _patch_text(trace.meta.patch) or "none",
        f"{within:.3g}",
        f"{past:.3g}",
        np.asarray(trace.layers).size,
        np.asarray(trace.heads).size,
        trace.meta.extra.get("seconds", "") if isinstance(trace.meta.extra, dict) else "",
    ]


def _nanmean(arr: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN without a warning."""
    finite = ~np.isnan(arr)
    count = finite.sum(axis=axis)
    total = np.where(finite, arr, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
