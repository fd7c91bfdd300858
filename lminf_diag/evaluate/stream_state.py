"""What a stream keeps on disk so that it resumes exactly where it stopped.

A stream folder holds:

    state.json   the settings, the token count and a digest of the token ids (a folder is only
                 resumed for the same text and settings), and the tokens done at the last checkpoint
    nll.f32      the per-token loss so far, raw little-endian float32 (4 MB per million tokens),
                 appended at each checkpoint
    stats.npz    the attention-statistics samples so far (small)
    cache.pt     a snapshot of the bounded KV cache (first n_global + last n_local entries per layer,
                 with their true positions) and the last hidden state; its own `done` is the commit
                 point: it is renamed into place after the loss and the statistics are on disk

Why a snapshot and not a re-prefill of the first n_global and last n_local tokens: the cached keys
and values of layer l at position p depend on the hidden states of the n_local tokens before p in
layer l - 1, and so on down the layers: a cache rebuilt from the last n_local tokens alone is not
the streamed one in any layer but the first (an exact rebuild would re-read about
layers x n_local tokens). The snapshot is bounded like the cache itself.

Example:
    >>> import tempfile, torch
    >>> from transformers import DynamicCache
    >>> from lminf_diag.patch.cache import LambdaLayer
    >>> cache = DynamicCache(); cache.layers = [LambdaLayer(2, 3)]
    >>> _ = cache.layers[0].update(torch.ones(1, 1, 7, 4), torch.ones(1, 1, 7, 4))
    >>> path = tempfile.mkdtemp() + "/cache.pt"
    >>> save_snapshot(path, cache, torch.zeros(1, 8), done=7)
    >>> back, hidden, done = load_snapshot(path)
    >>> back.layers[0].positions.tolist(), back.get_seq_length(), done
    ([0, 1, 4, 5, 6], 7, 7)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from lminf_diag.errors import RunDirectoryError
from lminf_diag.patch.snapshot import load_snapshot, save_snapshot
from lminf_diag.util.atomic import atomic_write, atomic_write_text

STATE, NLL, STATS, CACHE = "state.json", "nll.f32", "stats.npz", "cache.pt"
__all__ = ["load_snapshot", "save_snapshot"]  # the cache snapshot lives in patch.snapshot


def ids_digest(ids: np.ndarray) -> str:
    """sha256 of the token ids as int64 (a folder resumes only the same tokens).

    >>> ids_digest(np.arange(3))[:12]
    'ab25350e3e65'
    """
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def read_state(folder: Path) -> dict | None:
    """The folder's state.json, or None when there is none."""
    file = folder / STATE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirectoryError(f"{file}: unreadable ({err}); pass --overwrite to start afresh.") from err


def write_state(folder: Path, state: dict) -> None:
    atomic_write_text(folder / STATE, json.dumps(state, indent=2) + "\n")


def append_nll(folder: Path, done_before: int, values: np.ndarray) -> None:
    """Write `values` at token `done_before` of nll.f32 (what lies beyond is cut first), fsynced."""
    file = folder / NLL
    with open(file, "r+b" if file.exists() else "wb") as f:
        f.truncate(done_before * 4)
        f.seek(done_before * 4)
        f.write(np.ascontiguousarray(values, dtype="<f4").tobytes())
        f.flush()
        os.fsync(f.fileno())


def read_nll(folder: Path, done: int) -> np.ndarray:
    """The first `done` losses of nll.f32 as a read-only memory map (no copy into memory)."""
    file = folder / NLL
    size = file.stat().st_size // 4 if file.exists() else 0
    if size < done:
        raise RunDirectoryError(f"{file}: {size} losses on disk but the snapshot says {done}; pass --overwrite.")
    if done == 0:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(file, dtype="<f4", mode="r", shape=(done,))


def save_stats(folder: Path, stats: dict[str, np.ndarray]) -> None:
    atomic_write(folder / STATS, lambda f: np.savez(f, **stats))


def load_stats(folder: Path, done: int) -> dict[str, np.ndarray] | None:
    """The saved statistic samples whose chunk ended by token `done`, or None."""
    file = folder / STATS
    if not file.is_file():
        return None
    with np.load(file) as z:
        stats = {k: z[k] for k in z.files}
    keep = stats["end"] <= done
    return {k: v[keep] for k, v in stats.items()}


__all__ = ["CACHE", "NLL", "STATE", "STATS", "append_nll", "ids_digest", "load_snapshot", "load_stats",
           "read_nll", "read_state", "save_snapshot", "save_stats", "write_state"]
