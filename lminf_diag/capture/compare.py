"""`compare`: run one token window baseline and patched (and ablation modes) and keep the traces."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attention.method_spec import MethodSpec, split_name
from ..attention.spec import LambdaSpec
from ..devices import input_device
from ..errors import InvalidArgumentError, NumericalError
from ..models import model_info, model_name
from ..models.families import family_of
from ..patch import lm_infinite
from ..patch.cache import bounded_copy
from ..patch.methods import method as run_method
from ..patch.methods import resolve_method
from ..patch.router import router_of
from .checkpoint import CaptureCheckpoint, capture_ident
from .chunked import chunk_tokens, read_chunked
from .comparison import Comparison
from .hidden import LayerProgress
from .nll import token_nll
from .prefix import Prefix, merge_prefix, shared_length
from .recorder import record
from .trace import Trace
from .windows import Replicate

AUTO_STRIDE_MAX_FULL = 1024  # up to this many tokens: every row
AUTO_STRIDE_ROWS = 256  # beyond: about this many evenly spaced rows (plus log-spaced ones)


def auto_stride(length: int) -> int:
    """The default query-row stride of the statistics: 1 up to 1024 tokens, else length // 256.

    >>> auto_stride(1024), auto_stride(16384)
    (1, 64)
    """
    return 1 if length <= AUTO_STRIDE_MAX_FULL else max(1, length // AUTO_STRIDE_ROWS)


def default_hidden_layers(n_layers: int) -> list[int]:
    """Layers of the paper's position-PCA figure that exist in this model: 1, 2, 4, n/3, 2n/3."""
    return sorted({i for i in (1, 2, 4, n_layers // 3, 2 * n_layers // 3) if 1 <= i <= n_layers})


def _stopped(trace: Trace, read: int) -> Trace:
    """A trace whose forward read only the first `read` tokens: hidden states kept before `read`."""
    keep = trace.hidden_positions < read
    if trace.hidden.size:
        trace.hidden = np.ascontiguousarray(trace.hidden[:, keep])
    trace.hidden_positions = trace.hidden_positions[keep]
    trace.meta.extra["stopped_at"] = int(read)
    return trace


def _check_finite(trace: Trace, read: int) -> None:
    bad = ~np.isfinite(trace.entropy) & (trace.positions < read)[None, None]
    if bad.any():
        li, _, pi = np.argwhere(bad)[0]
        raise NumericalError(
            f"NaN/inf in the attention of layer {int(trace.layers[li])} at position "
            f"{int(trace.positions[pi])} ({trace.meta.label}); try dtype float32 or a shorter length."
        )
    nll = trace.nll[1:read]
    if not np.isfinite(nll).all():
        pos = int(np.argwhere(~np.isfinite(nll))[0][0]) + 1
        raise NumericalError(f"NaN/inf loss at position {pos} ({trace.meta.label}); try dtype float32.")


def _method_spec(model, method: str | MethodSpec, n: int, train_len: int | None) -> MethodSpec:
    """A method name resolved for a window of n tokens (RoPE scaling: factor = n / training length)."""
    if isinstance(method, MethodSpec):
        return method
    rope = split_name(method)[1]
    return resolve_method(model, method, train_len=train_len, **({"target_len": n} if rope else {}))


def run_trace(model: torch.nn.Module, input_ids: torch.Tensor, *, label: str | None = None, patch: dict | None = None,
              layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
              hidden_layers: Sequence[int] = (), stride: int | str = "auto", hidden_stride: int = 1,
              text_source: str = "", check_finite: bool = True, train_len: int | None = None,
              prefix: Prefix | None = None, keep_prefix: int = 0,
              on_prefix: Callable[[Prefix], None] | None = None,
              method: str | MethodSpec | None = None, chunk: int | str | None = "auto", stop: int | None = None,
              progress: Callable[[int, int, str], None] | None = None,
              checkpoint: str | Path | None = None, checkpoint_seconds: float = 120.0) -> Trace:
    """One forward pass (baseline when `patch` and `method` are None) recording statistics, hidden
    states and NLL.

    `patch`: `lm_infinite` keyword arguments; or `method`: a method name or `MethodSpec` (see
    `lminf_diag.method`; a RoPE scaling name without factor is scaled to this window's length).
    The label defaults to the method's name ("baseline" without one); the trace's
    `meta.extra["method"]` holds the method's settings.

    `train_len` overrides the model's training length recorded in the trace. `keep_prefix=P`
    (baseline): also keep the KV cache of the first P tokens and hand it, as a `Prefix`, to
    `on_prefix`. `prefix` (patched run): start from that cache and capture only the rows from P
    on; rows before P are the baseline's (see `capture.prefix`). Models whose cache cannot be cut
    (sliding-window layers) or whose attention is replaced per module (ALiBi) run in full.
    `stride="auto"` (the default, as on the CLI) is `auto_stride(n)`.

    `chunk`: under a bounded-cache method (lambda, mask_only, window, streaming) the window is
    read in chunks with the bounded KV cache, in memory that does not grow with its length
    (`capture.chunked`); "auto" chunks windows past 32768 tokens, an int sets the chunk size,
    0 never chunks. `stop=B`: read only the first B tokens (a baseline too costly over the whole
    window); the trace keeps the window's rows, NaN from B on, hidden states only before B, and
    `meta.extra["stopped_at"] = B`. `progress(done, total, unit)` is called per chunk ("tokens"), or per layer ("layers") of a single pass.
    `checkpoint`: a file a chunked run writes every `checkpoint_seconds` and resumes from when it
    holds this capture (same tokens and settings; `capture.checkpoint`); the caller removes it
    once the trace is saved."""
    info = model_info(model, train_len=train_len)
    t0 = time.perf_counter()
    n = int(input_ids.shape[1])
    read = n if stop is None or int(stop) >= n else int(stop)
    if read < 2:
        raise InvalidArgumentError(f"stop={stop}: a run must read at least 2 tokens.")
    if patch and method is not None:
        raise InvalidArgumentError("give run_trace either patch= (LM-Infinite settings) or method=, not both.")
    spec = _method_spec(model, method, n, info.train_len) if method is not None else None
    if spec is not None:
        ctx = run_method(model, spec)
        # rows before n_local are the baseline's only when the RoPE table is the model's own
        resolved = spec.attention.to_dict() if spec.attention is not None and spec.rope is None else None
    else:
        ctx = lm_infinite(model, **patch, train_len=info.train_len) if patch else _null()
        resolved = {**patch, "n_local": patch.get("n_local") or info.train_len} if patch else None
    label = label or (spec.name if spec is not None else "baseline")
    stride = auto_stride(n) if stride == "auto" else stride
    share = shared_length(resolved, n) if prefix is not None and family_of(model).route != "module" else 0
    offset = share if share and share == prefix.length else 0
    attention = spec.attention.to_dict() if spec is not None and spec.attention is not None else resolved
    n_chunk = chunk_tokens(attention, read, chunk)
    ids = input_ids[:, :read]
    cache = None
    with ctx, record(model, layers=layers, heads=heads, hidden_layers=hidden_layers, stride=stride,
                      hidden_stride=hidden_stride, train_len=info.train_len, offset=offset,
                      total=n if n_chunk or read < n else None) as rec:
        if n_chunk:
            bounds = _bounds(model)  # (n_global, n_local) of the bounded cache
            start = bounded_copy(prefix.cache, *bounds) if offset else None
            ckpt = None
            if checkpoint is not None:
                what = {"label": label, "attention": attention, "layers": layers, "heads": heads,
                        "hidden_layers": list(hidden_layers), "stride": stride, "hidden_stride": hidden_stride,
                        "train_len": info.train_len, "offset": offset, "chunk": n_chunk,
                        "method": spec.to_dict() if spec is not None else None}
                ckpt = CaptureCheckpoint(Path(checkpoint), capture_ident(ids, what), float(checkpoint_seconds))
            tail = read_chunked(model, ids, rec, n_chunk, start=offset, cache=start, progress=progress,
                                checkpoint=ckpt, first=bounds[1])
            nll = tail
        else:
            with LayerProgress(model, progress):
                if offset:
                    tail = token_nll(model, ids[:, offset:], past_key_values=prefix.fresh_cache())
                    tail = np.concatenate([np.full(offset, np.nan, np.float32), tail])
                elif keep_prefix and 0 < keep_prefix < read - 1 and on_prefix is not None:
                    nll, cache = token_nll(model, ids, keep_cache=keep_prefix)
                else:
                    nll = token_nll(model, ids)
    trace = rec.trace
    if offset:
        trace = merge_prefix(trace, prefix.trace, offset)
        nll = prefix.trace.nll.copy()
        nll[offset + 1 :] = tail[offset + 1 :]
    if read < n:
        nll = np.concatenate([nll[:read], np.full(n - read, np.nan, np.float32)])
        trace = _stopped(trace, read)
    trace.nll = nll
    trace.meta.label = label
    if spec is None and trace.meta.patch:
        spec = MethodSpec.from_lambda(LambdaSpec(**trace.meta.patch))
    if spec is not None:
        trace.meta.extra["method"] = spec.to_dict()
    trace.meta.model = model_name(model)
    trace.meta.text_source = text_source
    trace.meta.train_len = int(info.train_len or 0)
    trace.meta.extra["seconds"] = round(time.perf_counter() - t0, 2)
    if offset:
        trace.meta.extra["shared_prefix"] = offset
    if n_chunk:
        trace.meta.extra["chunk"] = n_chunk
    if check_finite:
        _check_finite(trace, read)
    if cache is not None:
        on_prefix(Prefix(keep_prefix, cache, trace))
    return trace


def _bounds(model: torch.nn.Module) -> tuple[int, int]:
    """(n_global, n_local) of the bounded cache of the patch installed on `model`."""
    spec = router_of(model).spec
    return (0 if spec.mode == "window" else spec.n_global), spec.n_local


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def compare(model: torch.nn.Module, tokenizer: Any = None, text: str | None = None, length: int | None = None, *,
            input_ids: torch.Tensor | None = None,
            modes: Sequence[str] = ("lambda",), baseline: bool = True, n_global: int = 10,
            n_local: int | None = None, limit: int | None = None, layers: Sequence[int] | None = None,
            heads: Sequence[int] | None = None, hidden_layers: Sequence[int] | None = None, stride: int | str = "auto", hidden_stride: int = 1, text_source: str = "",
            progress: Callable[[str], None] | None = None, train_len: int | None = None,
            method: str | MethodSpec | Sequence[str | MethodSpec] | None = None,
            baseline_length: int | None = None) -> Comparison:
    """Run the same token window baseline and patched; a `Comparison` of their traces.

    `method`: one or more method names or `MethodSpec`s (see `lminf_diag.method`) run instead of
    `modes`, each labelled by its name; names take their method's defaults (give a resolved
    `MethodSpec` for other settings), RoPE scaling is scaled to the window's length.

    `text` is a string (tokenised to `length` tokens) or give `input_ids` (1, N) directly.
    `train_len` overrides the model's training length (the patch's default n_local, the capture's
    profile rows and bands, the traces' meta): a smaller one runs a pretend-T null.
    `stride`: every stride-th query row is recorded; "auto" (default) is `auto_stride(length)`.
    `baseline_length`: the baseline reads only the first that many tokens (its O(n^2) pass stops
    there; its trace is NaN after); the patched runs read the whole window, in chunks past 32k.

    Example:
        >>> cmp = compare(model, tok, text, 4096, n_global=10)          # doctest: +SKIP
        >>> cmp.baseline.entropy.shape == cmp.patched.entropy.shape      # doctest: +SKIP
        True
    """
    if input_ids is None:
        from ..data import token_window

        input_ids = token_window(tokenizer, text, length)
    dev = input_device(model)
    input_ids = input_ids.to(dev)
    n_layers = model_info(model).n_layers
    if hidden_layers is None:
        hidden_layers = default_hidden_layers(n_layers)
    if method is not None:
        specs = [method] if isinstance(method, (str, MethodSpec)) else list(method)
        n = int(input_ids.shape[1])
        specs = [_method_spec(model, m, n, model_info(model, train_len=train_len).train_len) for m in specs]
        runs = ([("baseline", None, None)] if baseline else []) + [(m.name, None, m) for m in specs]
    else:
        runs = ([("baseline", None, None)] if baseline else []) + [
            (m, dict(n_global=n_global, n_local=n_local, limit=limit, mode=m), None) for m in modes
        ]
    traces = {}
    held: list[Prefix] = []
    share = n_local or model_info(model, train_len=train_len).train_len or 0
    for label, patch, spec in runs:
        if progress:
            progress(f"{label}: forward pass over {input_ids.shape[1]} tokens")
        traces[label] = run_trace(model, input_ids, label=label, patch=patch, method=spec, layers=layers, heads=heads,
                                  hidden_layers=hidden_layers, stride=stride, hidden_stride=hidden_stride,
                                  text_source=text_source, prefix=held[0] if held else None, train_len=train_len,
                                  keep_prefix=share if label == "baseline" and len(runs) > 1 else 0,
                                  on_prefix=held.append, stop=baseline_length if label == "baseline" else None)
    return Comparison(traces)


def compare_windows(model: torch.nn.Module, tokenizer: Any, length: int, *, windows: int = 4,
                    texts: Sequence[str] | None = None, repeat: bool = False,
                    progress: Callable[[str], None] | None = None, **settings: Any) -> Replicate:
    """`compare` over K independent windows of `length` tokens: a `Replicate` for the analyzers.

    Windows share no token: the first from `texts[0]`, then one per other text, then later
    offsets (`capture.windows.plan_windows`); `texts` defaults to every bundled book, the default
    one first. `settings` are `compare`'s keywords (modes, n_global, n_local, stride, ...).

    Example:
        >>> rep = compare_windows(model, tok, 12288, windows=4, modes=["lambda"])   # doctest: +SKIP
        >>> ld.analyze.entropy_growth(rep).key_frame()                             # doctest: +SKIP
    """
    from ..data import default_text, list_books
    from .windows import plan_windows

    if texts is None:
        texts = [default_text()] + [b for b in list_books() if b != default_text()]
    out = []
    for where, ids in plan_windows(tokenizer, list(texts), length, windows, repeat=repeat):
        if progress:
            progress(f"window {where.index + 1}/{windows}: {where.text} from token {where.offset}")
        cmp = compare(model, input_ids=ids, text_source=where.text, progress=progress, **settings)
        for trace in cmp.traces.values():
            trace.meta.extra["window"] = where.to_dict()
        out.append(cmp)
    return Replicate(out)
