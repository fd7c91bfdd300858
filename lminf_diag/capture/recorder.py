"""`record`: record attention statistics and hidden states of one forward pass into a `Trace`.

The router sends every routed attention call to the kernel with a `StatsRequest` for the
captured layers; the kernel reduces each block of rows to per-row statistics that land in the
numpy buffers here. Hooks and routing are removed on exit, also through an exception.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..attention.stats import StatsRequest, log_edges, pair_anchors, profile_grid
from ..errors import InvalidArgumentError
from ..patch.router import install, release_if_idle
from ..util.versions import TRACE_PACKAGES, versions
from .hidden import HiddenHooks, decoder_layers
from .trace import Trace, TraceMeta


@dataclass
class CaptureConfig:
    """What to record. `stride` measures every stride-th query row (plus the profile rows)."""

    layers: Sequence[int] | None = None  # None = all
    heads: Sequence[int] | None = None  # None = all query heads
    hidden_layers: Sequence[int] = ()
    hidden_stride: int = 1
    sink_tokens: int = 4
    profile_rows: Sequence[int] | None = None  # None = `default_profile_rows(n, train_len)`
    stride: int = 1
    train_len: int | None = None  # adds profile rows past it and the paired-band distances
    offset: int = 0  # the next forward covers positions offset.. (earlier rows: a shared prefix or earlier chunks)
    total: int | None = None  # the window's length when it is read in several forwards (chunks); None: one forward


PROFILE_ROWS_BEYOND = 64  # profile rows spread over (T, n] by default


def default_profile_rows(n: int, train_len: int | None = None) -> list[int]:
    """The last row, 4 spread over the sequence and, past `train_len`, 64 evenly spread over (T, n).

    >>> len(default_profile_rows(16384, 8192))  # n - 1 is both a spread row and the last row
    68
    >>> default_profile_rows(64)
    [7, 15, 31, 47, 63]
    """
    rows = {max(0, n * k // 8 - 1) for k in (1, 2, 4, 6)} | {n - 1}
    if train_len and n - 1 > train_len:
        rows |= set(np.unique(np.linspace(train_len + 1, n - 1, PROFILE_ROWS_BEYOND).astype(np.int64)).tolist())
    return sorted(rows)


def profile_distances(n: int, train_len: int | None = None) -> np.ndarray:
    """The profile grid (`profile_grid(n)`) plus the paired-band edges of `pair_anchors(train_len)`."""
    grid = profile_grid(n)
    if train_len:
        extra = [d for trio in pair_anchors(train_len).values() for d in trio if 0 <= d <= n]
        grid = np.unique(np.concatenate([grid, np.asarray(extra, dtype=np.int64)]))
    return grid


class Recorder:
    """Buffers filled by the kernel during capture; `trace` assembles them after the forward."""

    def __init__(self, model: torch.nn.Module, cfg: CaptureConfig) -> None:
        self.model, self.cfg = model, cfg
        n_layers = len(decoder_layers(model))
        cfg_heads = getattr(model.config, "num_attention_heads", None) or getattr(model.config, "n_head", None)
        self.layers = list(range(n_layers)) if cfg.layers is None else [int(x) for x in cfg.layers]
        bad = [x for x in self.layers if not 0 <= x < n_layers]
        if bad:
            raise InvalidArgumentError(f"layers {bad} out of range: this model has layers 0..{n_layers - 1}.")
        self.n_heads = int(cfg_heads or 0)
        self.heads = None if cfg.heads is None else [int(h) for h in cfg.heads]
        if self.heads is not None and any(not 0 <= h < self.n_heads for h in self.heads):
            raise InvalidArgumentError(f"heads {self.heads} out of range: this model has heads 0..{self.n_heads - 1}.")
        if cfg.stride < 1 or cfg.hidden_stride < 1 or cfg.sink_tokens < 0:
            raise InvalidArgumentError("stride and hidden_stride must be >= 1 and sink_tokens >= 0.")
        self.slot = {layer: i for i, layer in enumerate(self.layers)}
        self.n = 0
        self.bufs: dict[str, np.ndarray] = {}
        self.profiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.hidden: HiddenHooks | None = None
        self.label, self.patch_settings = "baseline", None
        self.base = 0  # recorded positions before cfg.offset (their buffers are filled by the caller)

    def _setup(self, n: int) -> None:
        cfg = self.cfg
        self.n = n
        rows = cfg.profile_rows or default_profile_rows(n, cfg.train_len)
        self.rows_profile = sorted({r for r in rows if 0 <= r < n})
        pos = set(range(0, n, cfg.stride)) | set(self.rows_profile) | {n - 1}
        if cfg.stride > 1:  # log-spaced rows too, so fits against ln n see short contexts
            pos |= set(np.unique(np.geomspace(1, n, 64).astype(np.int64) - 1).tolist())
        self.positions = np.asarray(sorted(pos), dtype=np.int64)
        self.edges = log_edges(n)
        self.grid = profile_distances(n, cfg.train_len)
        L, H, M = len(self.layers), len(self.heads) if self.heads else self.n_heads, len(self.positions)
        for name in ("entropy", "max_logit", "lse", "sink_mass"):
            self.bufs[name] = np.full((L, H, M), np.nan, dtype=np.float32)
        self.bufs["dist_mass"] = np.zeros((L, H, M, len(self.edges) - 1), dtype=np.float16)
        self.profiles.clear()

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to resume this capture (tensors and plain values only)."""
        hid = self.hidden
        return {
            "n": self.n,
            "bufs": {k: torch.from_numpy(v) for k, v in self.bufs.items()},  # shared: written at once
            "profiles": [(slot, pos, torch.from_numpy(p), torch.from_numpy(b))
                         for (slot, pos), (p, b) in self.profiles.items()],
            "hidden": None if hid is None or hid.states is None else torch.from_numpy(hid.states),
            "hidden_positions": None if hid is None or hid.positions is None else torch.from_numpy(hid.positions),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()` of an interrupted capture of the same window and settings."""
        self._setup(int(state["n"]))
        self.bufs = {k: v.numpy() for k, v in state["bufs"].items()}
        self.profiles = {(int(slot), int(pos)): (p.numpy(), b.numpy()) for slot, pos, p, b in state["profiles"]}
        if self.hidden is not None and state["hidden"] is not None:
            self.hidden.states = state["hidden"].numpy()
            self.hidden.positions = state["hidden_positions"].numpy()

    def at(self, offset: int) -> None:
        """The next forward covers positions `offset`.. (chunked reading: set before each chunk)."""
        self.cfg.offset = int(offset)
        if self.hidden is not None:
            self.hidden.offset = int(offset)

    def request(self, layer: int, n_q: int) -> StatsRequest | None:
        """Called by the router for each attention call: what to measure for `layer`."""
        if layer not in self.slot:
            return None
        off = self.cfg.offset
        n = self.cfg.total or n_q + off
        if n != self.n:
            self._setup(n)
        lo, hi = np.searchsorted(self.positions, [off, off + n_q])  # recorded rows inside this call
        self.base = int(lo)
        if lo == hi:
            return None  # a chunk without recorded rows
        whole = lo == 0 and hi == len(self.positions) == n_q
        rows = None if whole else torch.as_tensor(self.positions[lo:hi] - off)
        return StatsRequest(
            sink=lambda sl, res, slot=self.slot[layer]: self._write(slot, sl, res),
            sink_tokens=self.cfg.sink_tokens,
            dist_edges=self.edges,
            profile_rows=tuple(self.rows_profile),
            profile_dist=self.grid,
            rows=rows,
        )

    def _write(self, slot: int, rows: slice, res: dict[str, Any]) -> None:
        if res["entropy"].shape[0] != 1:
            raise InvalidArgumentError("capture records batch size 1; pass one sequence at a time.")
        hsel = self.heads
        if self.base:
            rows = slice(rows.start + self.base, rows.stop + self.base)
        for name in ("entropy", "max_logit", "lse", "sink_mass", "dist_mass"):
            arr = res[name][0]
            arr = arr[hsel] if hsel is not None else arr
            self.bufs[name][slot, :, rows] = arr.detach().float().cpu().numpy().astype(self.bufs[name].dtype)
        for pos, prof, band in res.get("profiles", []):
            p, b = (prof[0][hsel], band[0][hsel]) if hsel is not None else (prof[0], band[0])
            self.profiles[(slot, pos)] = (p.detach().cpu().numpy(), b.detach().cpu().numpy())

    @property
    def trace(self) -> Trace:
        """The recorded `Trace` (after a forward pass inside `record`)."""
        if not self.bufs:
            raise InvalidArgumentError("nothing captured yet: run a forward pass inside `record(model)`.")
        L = len(self.layers)
        H = self.bufs["entropy"].shape[1]
        prof = np.full((L, H, len(self.rows_profile), len(self.grid)), np.nan, dtype=np.float32)
        band = np.full_like(prof, np.nan)
        for (slot, pos), (arr, bmax) in self.profiles.items():
            prof[slot, :, self.rows_profile.index(pos)] = arr
            band[slot, :, self.rows_profile.index(pos)] = bmax
        hid = self.hidden
        hidden = hid.states if hid is not None and hid.states is not None else np.zeros((0, 0, 0), np.float16)
        meta = TraceMeta(n_tokens=self.n, label=self.label, patch=self.patch_settings,
                         sink_tokens=self.cfg.sink_tokens, versions=versions(TRACE_PACKAGES, python=False),
                         date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        return Trace(
            meta=meta,
            layers=np.asarray(self.layers),
            heads=np.asarray(self.heads if self.heads is not None else range(H)),
            positions=self.positions,
            **self.bufs,
            dist_edges=self.edges,
            profile_rows=np.asarray(self.rows_profile, dtype=np.int64),
            profile_dist=self.grid,
            logit_profile=prof,
            profile_band=band,
            hidden_layers=np.asarray(hid.indices if hid else [], dtype=np.int64),
            hidden_positions=hid.positions if hid and hid.positions is not None else np.zeros(0, np.int64),
            hidden=hidden,
            nll=np.full(self.n, np.nan, dtype=np.float32),
        )


@contextmanager
def record(model: torch.nn.Module, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
           hidden_layers: Sequence[int] = (), *, hidden_stride: int = 1, hidden_positions: int | None = None,
           sink_tokens: int = 4, profile_rows: Sequence[int] | None = None, stride: int = 1,
           train_len: int | None = None, offset: int = 0, total: int | None = None) -> Iterator[Recorder]:
    """Record attention statistics (and hidden states) of the next forward pass.

    Works on the baseline model and under `lm_infinite` alike; statistics come from the same
    kernel that computes the attention, so both traces have the same shapes and meanings.
    `offset` > 0: the forward pass reads only positions offset.. (after a KV cache of the first
    `offset` tokens); the trace has the full shapes, NaN (zero for hidden states) before `offset`.
    `total`: the window is read in several forward passes (chunks of a bounded-cache method, see
    `capture.chunked`); call `rec.at(start)` before each, the trace covers `total` tokens.

    Example (a tiny random-weight model):
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        ...                   num_attention_heads=2, num_key_value_heads=2)
        >>> model = LlamaForCausalLM(cfg).eval()
        >>> with torch.no_grad(), record(model, layers=[0, 1], hidden_layers=[1]) as rec:
        ...     _ = model(torch.arange(12)[None])
        >>> rec.trace.entropy.shape  # (layers, heads, positions)
        (2, 2, 12)
    """
    cfg = CaptureConfig(layers, heads, tuple(hidden_layers), hidden_stride, sink_tokens, profile_rows, stride,
                        train_len, offset, total)
    rec = Recorder(model, cfg)
    router = install(model)
    if router.recorder is not None:
        release_if_idle(model)
        raise InvalidArgumentError("a capture is already active on this model; nest captures on separate models.")
    if router.spec is not None:
        rec.label, rec.patch_settings = router.spec.mode, router.spec.to_dict()
    router.recorder = rec
    try:
        if cfg.hidden_layers:
            pos = None if hidden_positions is None else np.arange(0, hidden_positions, hidden_stride)
            rec.hidden = HiddenHooks(model, cfg.hidden_layers, pos, stride=hidden_stride, offset=offset, total=total)
            with rec.hidden:
                yield rec
        else:
            yield rec
    finally:
        router.recorder = None
        release_if_idle(model)
