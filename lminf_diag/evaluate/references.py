"""The loss analyzer's references for replicated windows: re-computation and a shuffled control.

- `recompute_windows`: for each window, every token past T predicted from its last T tokens,
  re-encoded (`evaluate.recompute.recompute_nll`): the in-distribution loss of the same tokens.
- `control_windows`: for each window, the baseline on a paragraph-shuffled copy of the window's
  own text (`data.control.shuffled_window`): memorised text cannot be recited from it.

Each window is a resumable cell in the run folder (`evaluate.cells.CellStore`; control traces
through `RunDir.save_trace`), so an interrupted run keeps what it finished.

Example:
    >>> refs = recompute_windows(lambda: (model, windows, 8192), len(windows))  # doctest: +SKIP
    >>> ld.analyze.perplexity_by_position(rep, reference=refs)                # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from lminf_diag.evaluate.cells import CellStore
from lminf_diag.evaluate.recompute import RecomputeResult, recompute_nll


def recompute_windows(
    load: Callable[[], tuple[Any, Sequence[tuple[Any, Any]], int]], k: int, *, stride: int | None = None,
    run_dir: Any = None, settings: dict | None = None, steps: Any = None,
) -> list[RecomputeResult]:
    """One `RecomputeResult` per window, for windows 0..k-1; each cached in `run_dir`.

    `load()` returns (model, [(Window, ids)], train_len); it is called only when a window's cell
    is missing, so a finished run does not load the model again."""
    store = CellStore(run_dir, "recompute", {**(settings or {}), "stride": stride})
    loaded: list = []
    out = []
    for w in range(k):
        key = f"w{w}"
        cell = store.load(key)
        name = f"window {w + 1}: re-computation reference (each token from its last T, re-encoded)"
        if cell is not None:
            info = dict(cell)
            arr = info.pop("array")
            out.append(RecomputeResult(nll=np.asarray(arr, dtype=np.float32), **info))
            if steps is not None:
                steps.skip(name)
            continue
        if not loaded:
            loaded.append(load())
        model, windows, train_len = loaded[0]
        t0 = time.perf_counter()
        ctx = steps.step(name) if steps is not None else nullcontext()
        with ctx:
            res = recompute_nll(model, windows[w][1], train_len, stride)
        info = {k: getattr(res, k) for k in ("train_len", "stride", "context", "context_min", "context_max",
                                              "forward_passes", "forward_tokens", "seconds")}
        store.save(key, info, res.nll, seconds=time.perf_counter() - t0)
        out.append(res)
    return out


def shuffled_ids(tokenizer: Any, ids: Any, seed: int) -> Any:
    """(1, N) ids of a paragraph-shuffled copy of the window's own text (same length N).

    A window too short to hold two paragraphs is shuffled by lines, then by sentences."""
    import re

    from lminf_diag.data import token_window
    from lminf_diag.data.control import paragraphs, shuffled_window

    text = tokenizer.decode(ids[0], skip_special_tokens=True)
    n = int(ids.shape[1])
    if len(paragraphs(text)) >= 2:
        try:
            return shuffled_window(tokenizer, text, n, seed)
        except Exception:  # decoding and re-tokenising can fall a few tokens short
            pass
    units = [u for u in re.split(r"\n\s*\n" if len(paragraphs(text)) >= 2 else r"(?<=[.!?\n])\s+", text) if u.strip()]
    if len(units) < 2:
        units = text.split(" ")
    order = np.random.default_rng(seed).permutation(len(units))
    joined = ("\n\n" if len(paragraphs(text)) >= 2 else " ").join(units[i] for i in order)
    return token_window(tokenizer, joined, n, repeat=True)


__all__ = ["recompute_windows", "shuffled_ids"]
