"""`stream_loss`: the per-token loss of a text of any length, read chunk by chunk in flat memory.

The text goes through the model in chunks of `chunk` tokens with the patch's bounded KV cache
(first n_global + last n_local entries per layer, true positions: `patch/cache.py`), so memory
does not grow with the text. Per chunk only the final hidden states are kept and the loss is taken
row by row through the LM head (no n x vocabulary logits). The loss array (float32, 4 MB per
million tokens) is the only thing that grows; with a `folder` it is written to disk at each
checkpoint, next to a snapshot of the bounded cache, and an interrupted stream resumes exactly
where it stopped (`evaluate.stream_state`). Every `stats_every` tokens, the attention entropy and
max logit of one chunk's rows are recorded by `record` (`capture.recorder`). Every attention
output is checked for NaN/inf (`evaluate.finite`).

Example:
    >>> import lminf_diag as ld                                       # doctest: +SKIP
    >>> model, tok = ld.load_model("smollm2-135m")                    # doctest: +SKIP
    >>> ids = stream_ids(tok, tokens=100_000)                         # doctest: +SKIP
    >>> res = stream_loss(model, ids, method="lambda", chunk=2048, folder="runs/s")  # doctest: +SKIP
    >>> res.key_figures()[0].text()                                   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lminf_diag.capture.nll import rows_nll
from lminf_diag.errors import InvalidArgumentError, NumericalError, RunDirectoryError, TextTooShortError
from lminf_diag.evaluate import stream_state as disk
from lminf_diag.evaluate.finite import FiniteGuard, check_logits
from lminf_diag.evaluate.stream_result import StreamResult


@dataclass(frozen=True)
class StreamConfig:
    """Settings of one stream. `stats_every`: tokens between attention-statistics samples (0 = none);
    `stats_rows`: rows measured per sampled chunk; checkpoints every `checkpoint_every` tokens
    (0 = by time only) or `checkpoint_seconds`, whichever comes first (with a folder)."""

    method: str = "lambda"
    chunk: int = 2048
    n_global: int | None = None  # None: the method's default (10; streaming: 4 sinks)
    n_local: int | None = None
    limit: int | None = None
    train_len: int | None = None
    stats_every: int = 0
    stats_rows: int = 64
    checkpoint_every: int = 0
    checkpoint_seconds: float = 120.0

    def check(self) -> None:
        for name, low in (("chunk", 1), ("stats_every", 0), ("stats_rows", 1),
                          ("checkpoint_every", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidArgumentError(f"{name} must be a whole number >= {low}, got {value!r}.")
        for name, low in (("n_global", 0), ("n_local", 1), ("limit", 1), ("train_len", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise InvalidArgumentError(f"{name} must be a whole number >= {low} or None, got {value!r}.")


@dataclass(frozen=True)
class StreamProgress:
    """What the `on_chunk` callback receives after each chunk."""

    done: int
    total: int
    seconds: float  # since this call started
    tokens_per_second: float  # over this call (a resumed stream counts only what it streamed)

    @property
    def eta_seconds(self) -> float:
        left = self.total - self.done
        return left / self.tokens_per_second if self.tokens_per_second > 0 else float("nan")


def _refuse_unbounded(name: str, attention) -> None:
    if attention is None or attention.mode == "cap_only" or attention.top_k:
        raise InvalidArgumentError(
            f"method {name!r} cannot be streamed in flat memory: its KV cache keeps every key (no Λ-shaped "
            "or sliding attention, cap_only, or top-k middle tokens). Accepted: lambda, mask_only, window, "
            "streaming, and their RoPE-scaled forms such as lambda+yarn."
        )


def method_context(model, name: str, *, train_len: int, **settings):
    """(context manager putting `model` under method `name`, its resolved attention settings).

    `lminf_diag.patch.method` when it exists, else `lm_infinite(mode=name)`; methods whose cache is
    not bounded are refused with `InvalidArgumentError`.
    """
    import importlib

    from lminf_diag.attention.spec import LambdaSpec

    patch_pkg = importlib.import_module("lminf_diag.patch")  # the package (`lminf_diag.patch` is a function)
    settings = {k: v for k, v in settings.items() if v is not None}
    method = getattr(patch_pkg, "method", None)
    if callable(method):
        from lminf_diag.patch.methods import resolve_method

        spec = resolve_method(model, name, train_len=train_len, **settings)
        _refuse_unbounded(name, spec.attention)
        return method(model, spec), spec.attention
    try:
        attention = LambdaSpec.resolve(train_len, mode=name, **settings)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"method {name!r}: {err}") from err
    _refuse_unbounded(name, attention)
    return patch_pkg.lm_infinite(model, mode=name, train_len=train_len, **settings), attention


def _as_ids(ids: Any) -> np.ndarray:
    arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"ids must be token ids of one sequence, shape (N,) or (1, N) integers; got shape {arr.shape} "
            f"of {arr.dtype}."
        )
    if arr.size < 2:
        raise TextTooShortError(f"the stream has {arr.size} token(s); a loss needs at least 2 tokens.")
    return arr.astype(np.int64, copy=False)


def _cache_entries(cache) -> int:
    sizes = [layer.keys.shape[-2] for layer in getattr(cache, "layers", ()) if getattr(layer, "keys", None) is not None]
    return max(sizes, default=0)


class _Stats:
    """Attention-statistics samples: chunk start/end, per-layer mean entropy and max logit."""

    def __init__(self, saved: dict[str, np.ndarray] | None):
        names = ("start", "end", "entropy", "max_logit")
        self.rows: dict[str, list] = {k: list(saved[k]) if saved is not None else [] for k in names}

    def add(self, start: int, end: int, trace) -> None:
        self.rows["start"].append(start)
        self.rows["end"].append(end)
        with np.errstate(all="ignore"):
            self.rows["entropy"].append(np.nanmean(trace.entropy, axis=(1, 2)))  # (L,)
            self.rows["max_logit"].append(np.nanmean(trace.max_logit, axis=(1, 2)))  # (L,)

    def arrays(self) -> dict[str, np.ndarray]:
        ent = self.rows["entropy"]
        width = len(ent[0]) if ent else 0
        return {
            "start": np.asarray(self.rows["start"], dtype=np.int64),
            "end": np.asarray(self.rows["end"], dtype=np.int64),
            "entropy": np.asarray(ent, dtype=np.float32).reshape(len(ent), width),
            "max_logit": np.asarray(self.rows["max_logit"], dtype=np.float32).reshape(len(ent), width),
        }


def _open_folder(folder: Path | None, cfg: StreamConfig, ids: np.ndarray, device):
    """(cache, hidden, done, stats) to resume from, or a fresh start; writes state.json."""
    if folder is None:
        return None, None, 0, None
    folder.mkdir(parents=True, exist_ok=True)
    state = {"format": "lminf_diag.stream", "config": asdict(cfg), "n": int(ids.size), "ids": disk.ids_digest(ids)}
    saved = disk.read_state(folder)
    if saved is not None and (saved.get("config") != state["config"] or saved.get("ids") != state["ids"]):
        raise RunDirectoryError(
            f"{folder} holds a stream of another text or other settings; use another folder or remove it "
            "(CLI: --overwrite)."
        )
    if saved is None or not (folder / disk.CACHE).is_file():
        disk.write_state(folder, {**state, "done": 0})
        return None, None, 0, None
    cache, hidden, done = disk.load_snapshot(folder / disk.CACHE, device)
    return cache, hidden, done, disk.load_stats(folder, done)


def stream_loss(
    model,
    ids: Any,
    method: str = "lambda",
    chunk: int = 2048,
    *,
    n_global: int | None = None,
    n_local: int | None = None,
    limit: int | None = None,
    train_len: int | None = None,
    stats_every: int = 0,
    stats_rows: int = 64,
    folder: str | Path | None = None,
    checkpoint_every: int = 0,
    checkpoint_seconds: float = 120.0,
    on_chunk: Callable[[StreamProgress], None] | None = None,
    text: str = "",
) -> StreamResult:
    """Stream `ids` (N,) through `model` under `method` in chunks; returns a `StreamResult`.

    `method`: lambda (LM-Infinite), mask_only, window, streaming, ... (`lminf_diag.patch.method`);
    n_global and n_local None mean the method's defaults (n_local: the training length, `train_len`
    else the model's). With `folder`, the
    loss and a cache snapshot are written at each checkpoint and a later call with the same ids
    and settings resumes there. `on_chunk(StreamProgress)` is called after each chunk (raise in it
    to stop: what was checkpointed stays). Bad settings raise `InvalidArgumentError`.

    Example:
        >>> res = stream_loss(model, ids, "lambda", chunk=1024, n_local=2048)   # doctest: +SKIP
        >>> res.nll.shape, res.peak_cache_entries <= 10 + 2048                  # doctest: +SKIP
    """
    from lminf_diag.capture import recorder
    from lminf_diag.models.info import model_info

    capture = getattr(recorder, "record", None) or recorder.capture  # the statistics context manager

    cfg = StreamConfig(method, chunk, n_global, n_local, limit, train_len, stats_every, stats_rows,
                       checkpoint_every, float(checkpoint_seconds))
    cfg.check()
    arr = _as_ids(ids)
    n = int(arr.size)
    T = train_len or model_info(model).train_len or n_local
    if T is None:
        raise InvalidArgumentError("the model's training length is unknown; pass train_len=N (or n_local=N).")
    head = model.get_output_embeddings()
    device = head.weight.device
    softcap = getattr(model.config, "final_logit_softcapping", None)
    context, attention = method_context(model, method, train_len=T, n_global=n_global, n_local=n_local,
                                        limit=limit)
    folder = None if folder is None else Path(folder)
    cache, prev, done, saved_stats = _open_folder(folder, cfg, arr, device)
    if cache is None:
        from transformers import DynamicCache

        cache = DynamicCache()
    stats = _Stats(saved_stats)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    grabbed: dict[str, torch.Tensor] = {}
    hook = model.base_model.register_forward_hook(
        lambda _m, _a, out: grabbed.__setitem__("h", out[0] if isinstance(out, tuple) else out.last_hidden_state)
    )
    pending: list[np.ndarray] = [] if done else [np.array([np.nan], dtype=np.float32)]
    memory = [] if folder is None else None
    peak, t0, last_ckpt, streamed, since = 0, time.perf_counter(), time.perf_counter(), 0, 0
    guard = FiniteGuard(model)
    try:
        with torch.no_grad(), context, guard:
            pos = done
            while pos < n:
                end = min(n, pos + chunk)
                x = torch.as_tensor(arr[pos:end], device=device)[None]  # (1, c)
                sample = stats_every > 0 and (pos == 0 or pos // stats_every != end // stats_every)
                guard.offset = pos
                ctx = capture(model, stride=max(1, (end - pos) // stats_rows)) if sample else nullcontext()
                with ctx as rec:
                    model(x, cache=cache, use_cache=True, **keep)
                if sample:
                    trace = rec.trace
                    msg = check_logits(trace.max_logit, trace.lse, trace.layers, trace.positions,
                                       head.weight.dtype, offset=pos)
                    if msg is not None:
                        raise NumericalError(msg)
                    stats.add(pos, end, trace)
                hidden = grabbed.pop("h")[0]  # (c, D)
                rows = hidden[:-1] if prev is None else torch.cat([prev.to(hidden.dtype), hidden[:-1]])
                targets = x[0, 1:] if prev is None else x[0]
                pending.append(rows_nll(head, rows, targets, softcap))
                prev = hidden[-1:].clone()
                peak = max(peak, _cache_entries(cache))
                streamed += end - pos
                since += end - pos
                pos = end
                now = time.perf_counter()
                due = pos == n or (checkpoint_every and since >= checkpoint_every) or (
                    now - last_ckpt >= checkpoint_seconds)
                if folder is not None and due:
                    _checkpoint(folder, cache, prev, pos, pending, stats)
                    pending, since, last_ckpt = [], 0, now
                elif memory is not None:
                    memory.extend(pending)
                    pending = []
                if on_chunk is not None:
                    elapsed = now - t0
                    on_chunk(StreamProgress(pos, n, elapsed, streamed / elapsed if elapsed > 0 else 0.0))
    finally:
        hook.remove()
    seconds = time.perf_counter() - t0
    if folder is not None:
        nll = disk.read_nll(folder, n)
    else:
        nll = np.concatenate(memory) if memory else np.zeros(0, np.float32)
    spec = {"n_global": attention.n_global, "n_local": attention.n_local, "limit": attention.limit}
    return StreamResult(
        nll=nll, train_len=int(T), labels=[method], method=method, settings={**spec, "chunk": chunk},
        seconds=seconds, streamed=streamed, peak_cache_entries=peak, cache_bound=attention.n_global + attention.n_local,
        stats=stats.arrays(), text=text,
    )


def _checkpoint(folder: Path, cache, hidden, done: int, pending: list[np.ndarray], stats: _Stats) -> None:
    """Loss and statistics first, then the snapshot (the commit point), then state.json."""
    values = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    disk.append_nll(folder, done - values.size, values)
    disk.save_stats(folder, stats.arrays())
    disk.save_snapshot(folder / disk.CACHE, cache, hidden, done)
    state = disk.read_state(folder) or {}
    disk.write_state(folder, {**state, "done": int(done)})


def stream_ids(tokenizer, text: str | None = None, tokens: int | None = None, *, repeat: bool = False,
               text_file: str | None = None) -> np.ndarray:
    """Token ids of the stream: a text file, one bundled book, or (default) every bundled book joined;
    cut to `tokens`; with `repeat`, the text is cycled to reach `tokens`.

    Example:
        >>> ids = stream_ids(tok, tokens=1_000_000, repeat=True)       # doctest: +SKIP
    """
    from lminf_diag.data import list_books, load_text

    if text_file is not None:
        body = load_text(text_file)[0]
    elif text:
        body = load_text(text)[0]
    else:
        body = "\n\n".join(load_text(name)[0] for name in list_books())
    if not body.strip():
        raise TextTooShortError("the text is empty; pass a text with words in it.")
    ids = np.asarray(tokenizer(body, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)
    if ids.size < 2:
        raise TextTooShortError(f"the text has {ids.size} token(s); a stream needs at least 2.")
    if tokens is not None:
        if tokens < 2:
            raise InvalidArgumentError(f"tokens must be >= 2, got {tokens}.")
        if tokens > ids.size and not repeat:
            raise TextTooShortError(
                f"the text has {ids.size} tokens, fewer than the {tokens} asked; pass repeat=True (CLI --repeat) "
                "to cycle it, a longer text, or fewer tokens."
            )
        ids = np.resize(ids, tokens)
    return ids


__all__ = ["StreamConfig", "StreamProgress", "method_context", "stream_ids", "stream_loss"]
