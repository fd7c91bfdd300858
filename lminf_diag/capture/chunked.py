"""Chunked capture: one window read in chunks under a bounded-cache method, in flat memory.

Under LM-Infinite (and `mask_only`, `window`, `streaming`) a query never attends a key that is
neither among the first n_global nor the last n_local, so the window can be read `chunk` tokens
at a time with the bounded KV cache (`patch.cache`): the attention of a chunk is exactly that of
a single pass over the whole window (up to float rounding), and memory no longer grows with the
window. Per chunk the recorder measures its recorded rows (`Recorder.at`), the hidden-state
hooks keep their positions, and the loss is taken row by row from the final hidden states; the
last hidden state of a chunk scores the next chunk's first token. Nothing n x n or n x
vocabulary is ever held; the trace is the one a single pass records. A long read writes
checkpoints and resumes from them (`capture.checkpoint`). `tests/test_chunked.py` checks chunked
traces, interrupted and resumed ones included, against single passes.

Runs that attend every key (the baseline, `cap_only`) or read middle keys (`top_k`) cannot be
chunked this way: their cost is O(n^2) whatever the memory (see `--baseline-length`).

Example:
    >>> chunk_tokens(None, 131072), chunk_tokens({"mode": "lambda", "n_local": 8192}, 131072)
    (0, 4096)
    >>> chunk_tokens({"mode": "lambda", "n_local": 8192}, 16384), chunk_tokens({"mode": "cap_only"}, 131072)
    (0, 0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .checkpoint import CaptureCheckpoint
from .nll import rows_nll
from .recorder import Recorder

CHUNK = 4096  # tokens per chunk (activations of one chunk, not of the window, are held)
CHUNKED_FROM = 32768  # "auto": windows longer than this are read in chunks when the method allows

Progress = Callable[[int, int, str], None]  # (units done, units in all, unit)


def bounded(settings: dict[str, Any] | None) -> bool:
    """True when the resolved attention settings give a bounded KV cache (Λ or sliding window)."""
    return bool(settings) and settings.get("mode", "lambda") != "cap_only" and not settings.get("top_k")


def chunk_tokens(settings: dict[str, Any] | None, n: int, chunk: int | str | None = "auto") -> int:
    """Tokens per chunk for a window of `n` tokens under `settings` (0: one pass).

    `chunk`: "auto" (chunks of `CHUNK` past `CHUNKED_FROM` tokens), an int (chunks of that size
    whenever the method allows), or 0 / None (never)."""
    if not chunk or not bounded(settings):
        return 0
    if chunk == "auto":
        return CHUNK if n > CHUNKED_FROM else 0
    return int(chunk) if int(chunk) < n else 0


def read_chunked(model: torch.nn.Module, input_ids: torch.Tensor, rec: Recorder, chunk: int, *, start: int = 0,
                 cache: Any = None, progress: Progress | None = None,
                 checkpoint: CaptureCheckpoint | None = None, first: int = 0) -> np.ndarray:
    """Forward `input_ids` (1, N) from position `start` on, `chunk` tokens at a time, under the
    patch already installed on `model`, with `rec` recording; returns the loss (N,) float32 (NaN
    at positions <= start when `start` > 0: their loss belongs to the prefix; nll[0] is NaN).

    `cache`: the bounded cache of the first `start` tokens (`patch.cache.bounded_copy`), else a
    fresh cache is bounded by the patch. `progress(done, total, "tokens")` is called after each chunk.
    `checkpoint`: resume from it when it holds this capture, and write it as it falls due
    (`capture.checkpoint`). `first`: the size of the first chunk when larger than `chunk` (n_local:
    every later chunk then follows a full window of keys, which the fused prefill path computes).
    """
    from transformers import DynamicCache

    n = int(input_ids.shape[1])
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    nll = np.full(n, np.nan, dtype=np.float32)
    grabbed: dict[str, torch.Tensor] = {}

    def grab(_mod: torch.nn.Module, _args: tuple, out: Any) -> None:
        grabbed["h"] = out[0] if isinstance(out, tuple) else out.last_hidden_state

    hook = model.base_model.register_forward_hook(grab)
    cache = DynamicCache() if cache is None else cache
    prev = None  # (1, D) the last final hidden state of the previous chunk
    ids = input_ids[0]
    pos = start
    saved = checkpoint.load(rec, input_ids.device) if checkpoint is not None else None
    if saved is not None:
        pos, nll, prev, cache = saved
    try:
        with torch.no_grad():
            while pos < n:
                end = min(n, pos + (max(chunk, first) if pos == 0 else chunk))
                rec.at(pos)
                model(input_ids[:, pos:end], cache=cache, use_cache=True, **keep)
                hidden = grabbed.pop("h")[0]  # (c, D)
                rows = hidden[:-1] if prev is None else torch.cat([prev.to(hidden.dtype), hidden[:-1]])
                first = pos + 1 if prev is None else pos  # the first token this chunk's rows predict
                if end > first:
                    nll[first:end] = rows_nll(head, rows, ids[first:end], softcap)
                prev = hidden[-1:].clone()
                pos = end
                if checkpoint is not None and pos < n and checkpoint.due():
                    checkpoint.save(pos, nll, prev, cache, rec)
                if progress is not None:
                    progress(pos - start, n - start, "tokens")
    finally:
        hook.remove()
    return nll
