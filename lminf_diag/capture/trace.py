"""`Trace`: everything one capture pass recorded, as plain numpy arrays.

A trace never holds an n x n matrix: per (layer, head, query position) statistics, a
running-max logit profile for a few query rows, hidden states of a few layers and the
per-token loss. Baseline and patched runs produce traces of identical shape and meaning.

Shapes (L = captured layers, H = captured heads, N = tokens, B = distance bins,
R = profile rows, P = profile distances, K = hidden layers, M = hidden positions, D = hidden size):

    entropy, max_logit, lse, sink_mass   (L, H, N) float32
    dist_mass                            (L, H, N, B) float16, rows sum to 1
    logit_profile                        (L, H, R, P) float32, NaN where P > row position
    hidden                               (K, M, D) float16
    nll                                  (N,) float32, nll[0] = NaN, nll[t] = -log p(x_t | x_<t)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    positions: np.ndarray  # (N,) int, query positions 0..N-1
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
    nll: np.ndarray  # (N,) per-token negative log-likelihood, nll[0] = NaN

    @property
    def n_tokens(self) -> int:
        return int(self.positions.shape[0])

    @property
    def label(self) -> str:
        return self.meta.label
