"""What the evaluation runners share: resumable cells, progress steps, the training length.

An evaluation (passkey, perplexity over documents) is a grid of independent cells, e.g. one
(mode, length) or one (mode, document). `CellStore` saves each cell as `<kind>/<key>.json`
(plus `<key>.npy` for an array) under a run folder, with the settings that produced it; a
rerun with the same settings loads the cell instead of computing it again, a cell saved
under other settings is recomputed. The folder is a `lminf_diag.runs.RunDir` (the cell is then
also recorded as step `<kind>:<key>` in run.json) or a plain directory path; None stores nothing.

Example:
    >>> import tempfile
    >>> store = CellStore(tempfile.mkdtemp(), "demo", {"length": 64})
    >>> store.load("baseline") is None
    True
    >>> store.save("baseline", {"accuracy": 1.0})
    >>> CellStore(store.root, "demo", {"length": 64}).load("baseline")["accuracy"]
    1.0
    >>> CellStore(store.root, "demo", {"length": 128}).load("baseline") is None
    True
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from lminf_diag.models.info import model_info
from lminf_diag.runs import RunDir
from lminf_diag.util.atomic import atomic_write_bytes, atomic_write_text
from lminf_diag.util.jsonsafe import to_json_safe

ProgressFactory = Callable[[int], Any]  # total steps -> an object with .step(name) and .skip(name, why)


def cell_name(key: str) -> str:
    """A file-name-safe form of a cell key.

    >>> cell_name("lambda/8192 tokens")
    'lambda_8192_tokens'
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(key)).lstrip(".") or "cell"


class CellStore:
    """Save and reload the cells of one evaluation kind; see the module docstring."""

    def __init__(self, run_dir: RunDir | str | os.PathLike[str] | None, kind: str, settings: dict[str, Any]):
        self.run = run_dir if isinstance(run_dir, RunDir) else None
        if self.run is not None:
            self.root: Path | None = self.run.path
        else:
            self.root = None if run_dir is None else Path(run_dir)
        self.kind = kind
        self.settings = json.loads(json.dumps(to_json_safe(settings), sort_keys=True))

    @property
    def enabled(self) -> bool:
        """False when nothing is stored (no run folder given)."""
        return self.root is not None

    def _path(self, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / self.kind / f"{cell_name(key)}{suffix}"

    def _step(self, key: str) -> str:
        return f"{self.kind}:{key}"

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved cell (a dict; its array, if any, under "array"), or None if absent or stale."""
        if not self.enabled:
            return None
        if self.run is not None and not self.run.has(self._step(key)):
            return None
        file = self._path(key, ".json")
        try:
            cell = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(cell, dict) or cell.get("settings") != self.settings:
            return None
        data = cell.get("data", {})
        if cell.get("has_array"):
            try:
                data["array"] = np.load(self._path(key, ".npy"), allow_pickle=False)
            except (OSError, ValueError):
                return None
        return data

    def save(
        self, key: str, data: dict[str, Any], array: np.ndarray | None = None, seconds: float | None = None
    ) -> None:
        """Save one finished cell (the array first, the json last: the json marks it complete)."""
        if not self.enabled:
            return
        if self.run is not None:
            self.run.start()
        if array is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(array), allow_pickle=False)
            atomic_write_bytes(self._path(key, ".npy"), buf.getvalue())
        cell = {
            "settings": self.settings,
            "has_array": array is not None,
            "seconds": seconds,
            "data": to_json_safe(data),
        }
        atomic_write_text(self._path(key, ".json"), json.dumps(cell, indent=1) + "\n")
        if self.run is not None:
            self.run.mark_done(self._step(key), seconds)


class Steps:
    """Progress of a runner's steps through an optional factory such as `lminf_diag.cli.progress.Progress`.

    The factory is called with the number of steps; its result must offer `step(name)` (a
    context manager around the work) and `skip(name, why)` (a step loaded from a run folder).

    >>> steps = Steps(None, 3)
    >>> with steps.step("baseline"):
    ...     pass
    """

    def __init__(self, factory: ProgressFactory | None, total: int):
        self.bar = factory(total) if factory is not None else None

    def step(self, name: str) -> AbstractContextManager[Any]:
        """A context manager timing one step (does nothing without a factory)."""
        return self.bar.step(name) if self.bar is not None else nullcontext()

    def skip(self, name: str, why: str = "saved in the run folder, skipped") -> None:
        """Count a step that was loaded instead of computed."""
        if self.bar is not None:
            self.bar.skip(name, why)


def model_train_len(model: Any) -> int | None:
    """The model's training length from `model_info`, or None when unknown (or not a full model).

    >>> model_train_len(object()) is None
    True
    """
    try:
        return model_info(model).train_len
    except Exception:  # a stand-in without a config: no training length
        return None


__all__ = ["CellStore", "ProgressFactory", "Steps", "cell_name", "model_train_len"]
