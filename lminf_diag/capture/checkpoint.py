"""Checkpoints of a chunked capture: a long capture stopped part-way resumes at its last checkpoint.

A 128k-token capture reads its window in chunks for many minutes (`capture.chunked`). Every
`every` seconds the reader writes one file, atomically: the position reached, the loss so far,
the last hidden state, the bounded KV cache (`patch.snapshot`) and the recorder's buffers
(statistics, logit profiles, hidden states). The file names what it is a checkpoint of (a digest
of the token ids and every capture setting); a rerun with the same window and settings continues
from it and gives the trace an uninterrupted run gives, any other file is ignored. The analysis
verbs keep it in ``<run folder>/partial/<trace key>.pt`` and remove it once the trace is saved.

Example:
    >>> capture_ident(np.arange(4), {"label": "lambda", "stride": 2})[:12]
    '2e298c1f1584'
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..patch.snapshot import load_snapshot, save_snapshot
from .recorder import Recorder


def capture_ident(ids: Any, settings: dict[str, Any]) -> str:
    """sha256 of the token ids and the capture settings (what a checkpoint belongs to)."""
    arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    h = hashlib.sha256(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass
class CaptureCheckpoint:
    """One checkpoint file of one capture; `due()` says when the next one is to be written."""

    path: Path
    ident: str
    every: float = 120.0  # seconds between checkpoints
    _last: float = field(default_factory=time.perf_counter)

    def due(self) -> bool:
        return time.perf_counter() - self._last >= self.every

    def save(self, done: int, nll: np.ndarray, prev: torch.Tensor | None, cache: Any, rec: Recorder) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"ident": self.ident, "nll": torch.from_numpy(nll), "recorder": rec.state()}
        save_snapshot(self.path, cache, prev, done, extra=extra)
        self._last = time.perf_counter()

    def load(self, rec: Recorder, device: Any = None) -> tuple[int, np.ndarray, torch.Tensor | None, Any] | None:
        """(position reached, loss so far, last hidden state, cache) with `rec` restored, or None
        when there is no checkpoint of this capture."""
        if not self.path.is_file():
            return None
        cache, prev, done, extra = load_snapshot(self.path, device, extra=True)
        if extra.get("ident") != self.ident:
            return None
        rec.restore(extra["recorder"])
        return int(done), extra["nll"].numpy().copy(), prev, cache

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


__all__ = ["CaptureCheckpoint", "capture_ident"]
