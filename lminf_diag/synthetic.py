"""Synthetic traces with analytic statistics: examples, tests and benchmarks that need no model.

`make_trace(kind="uniform")` is a model that attends uniformly to every earlier key:
at 0-based query position p it sees k = p + 1 keys, so entropy = ln(p + 1) exactly,
sink_mass = min(4, k) / k and dist_mass is k-uniform over log-spaced bins. Its logits and
loss blow up past the training length T. `kind="flat"` is what the Λ-patched model should
show: uniform over k = min(p + 1, T) keys (4 sink keys + the T - 4 nearest), entropy held at
ln(T), logits and loss that stay flat.

Planted values (so that tests can compute expected figures by hand):
    max_logit[l, h, p]        = LOGIT_BASE[l, h] + g[l, h] * log2(max(p + 1, T) / T)
    logit_profile[l, h, r, j] = LOGIT_BASE[l, h] + g[l, h] * log2(max(d_j, T) / T)  (NaN if d_j > row_r)
    profile_band[l, h, r, j]  = logit_profile[l, h, r, j] (the logit rises with d: a band's max is at d_j)
    g = planted_growth(L, H) for "uniform", 0 for "flat"
    nll[p] = NLL_BASE (1 <= p < T), NLL_BASE + NLL_GROWTH * ln((p + 1) / T) (p >= T, "uniform" only)
    hidden[k, m] = HIDDEN_SCALE * (ln(pos + 1) - mean) * u + HIDDEN_NOISE * noise (+ SINK_OFFSET * v, pos < 4)
"""

from __future__ import annotations

import numpy as np

from lminf_diag.attention.stats import pair_anchors
from lminf_diag.capture.comparison import Comparison
from lminf_diag.capture.trace import Trace, TraceMeta
from lminf_diag.errors import InvalidArgumentError

NLL_BASE = 2.0
NLL_GROWTH = 0.5
HIDDEN_SCALE = 3.0
HIDDEN_NOISE = 0.3
SINK_OFFSET = 30.0
SINK_TOKENS = 4


def planted_growth(layers: int, heads: int) -> np.ndarray:
    """(L, H) logit growth per doubling of distance past T for kind="uniform": 0.5 * (i + 1) / (L * H)."""
    return 0.5 * (np.arange(layers * heads, dtype=np.float64) + 1).reshape(layers, heads) / (layers * heads)


def logit_base(layers: int, heads: int) -> np.ndarray:
    """(L, H) logit level within the training length: 1 + 0.1 * layer + 0.05 * head."""
    return 1.0 + 0.1 * np.arange(layers)[:, None] + 0.05 * np.arange(heads)[None, :]


def log_bin_edges(n: int) -> np.ndarray:
    """(B + 1,) edges [0, 1, 2, 4, ..., 2**m] with 2**m >= n."""
    m = max(int(np.ceil(np.log2(max(n, 2)))), 1)
    return np.concatenate([[0], 2 ** np.arange(m + 1)]).astype(np.int64)


def _dist_mass(n: int, train_len: int, flat: bool, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, B) uniform mass per distance bin and (N,) number of attended keys."""
    p = np.arange(n)
    window = flat & (p + 1 > train_len)  # (N,) rows that keep 4 sink keys + the nearest T - 4
    local = np.where(window, train_len - SINK_TOKENS, p + 1)  # contiguous distances [0, local)
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    counts = np.clip(np.minimum(local[:, None], hi) - lo, 0, None).astype(np.float64)  # (N, B)
    for j in range(SINK_TOKENS):  # sink key j sits at distance p - j
        rows = np.nonzero(window)[0]
        bins = np.searchsorted(edges, rows - j, side="right") - 1
        np.add.at(counts, (rows, bins), 1.0)
    keys = counts.sum(axis=1)
    return counts / keys[:, None], keys


def _hidden(n: int, k: int, dim: int, planted: bool, outliers: bool, seed: int) -> np.ndarray:
    """(K, N, D) hidden states with a log-position direction (true or shuffled positions).

    The directions are the same for every seed (one "model"); seeds draw the noise and the
    shuffle, so that seeds play independent windows of the same model."""
    basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(dim, 2)))
    rng = np.random.default_rng(seed)
    u, v = basis[:, 0], basis[:, 1]
    pos = np.arange(n) if planted else rng.permutation(n)
    t = np.log(pos + 1.0)
    out = HIDDEN_SCALE * (t - t.mean())[None, :, None] * u + HIDDEN_NOISE * rng.normal(size=(k, n, dim))
    if outliers:
        out[:, :SINK_TOKENS] += SINK_OFFSET * v
    return out.astype(np.float16)


def make_trace(
    n: int = 512,
    layers: int = 2,
    heads: int = 3,
    train_len: int = 128,
    label: str = "baseline",
    kind: str = "uniform",
    hidden_planted: bool = True,
    seed: int = 0,
    *,
    hidden_dim: int = 32,
    hidden_layers: int = 2,
    first_token_outliers: bool | None = None,
    growth: float = 1.0,
    window_noise: float = 0.0,
) -> Trace:
    """A trace with analytic statistics (see the module docstring).

    hidden_planted=False stores the log-position direction for shuffled positions (no position
    information); first_token_outliers (default: hidden_planted) pushes the first 4 tokens'
    hidden states SINK_OFFSET away along a separate direction. `growth` scales the planted logit
    growth g; `window_noise` > 0 multiplies it by (1 + window_noise * z), z ~ N(0, 1) drawn from
    `seed`, so that seeds play independent windows.

    >>> t = make_trace(n=64, train_len=16)
    >>> float(t.entropy[0, 0, 9]) == float(np.float32(np.log(10)))
    True
    """
    if kind not in ("uniform", "flat"):
        raise InvalidArgumentError(f"kind={kind!r}; accepted: 'uniform', 'flat'")
    if n < 2 or train_len <= SINK_TOKENS or layers < 1 or heads < 1:
        raise InvalidArgumentError("need n >= 2, train_len > 4, layers >= 1, heads >= 1")
    flat = kind == "flat"
    shape = (layers, heads, n)
    p = np.arange(n)
    edges = log_bin_edges(n)
    mass, keys = _dist_mass(n, train_len, flat, edges)  # (N, B), (N,)
    base = logit_base(layers, heads)[:, :, None]  # (L, H, 1)
    scale = growth * (1.0 + window_noise * np.random.default_rng(10_000 + seed).normal())
    growth = np.zeros((layers, heads, 1)) if flat else scale * planted_growth(layers, heads)[:, :, None]
    max_logit = base + growth * np.log2(np.maximum(p + 1, train_len) / train_len)  # (L, H, N)
    rows = np.unique([n // 4, n // 2, n - 1])  # (R,)
    anchors = [d for trio in pair_anchors(train_len).values() for d in trio if d <= n - 1]
    dist = np.unique(
        np.concatenate([[0], 2 ** np.arange(int(np.log2(n - 1)) + 1 if n > 2 else 1), [n - 1], anchors])
    ).astype(np.int64)
    prof = base[..., None] + growth[..., None] * np.log2(
        np.maximum(dist, train_len) / train_len
    )  # (L, H, 1, P)
    prof = np.where(dist[None, :] <= rows[:, None], prof, np.nan)  # (L, H, R, P)
    # the planted logit rises with distance, so a band's max sits at its far edge: band = prof
    band = np.broadcast_to(prof, (layers, heads, rows.size, dist.size)).astype(np.float32)
    nll = np.full(n, NLL_BASE)
    if not flat:
        nll = np.where(p >= train_len, NLL_BASE + NLL_GROWTH * np.log(np.maximum(p + 1, 1) / train_len), nll)
    nll[0] = np.nan
    outliers = hidden_planted if first_token_outliers is None else first_token_outliers
    meta = TraceMeta(
        model="synthetic",
        text_source=f"synthetic:{kind}",
        n_tokens=n,
        train_len=train_len,
        label=label,
        patch={"mode": "lambda", "n_global": 4, "n_local": train_len, "limit": train_len} if flat else None,
        sink_tokens=SINK_TOKENS,
        versions={"synthetic": "1"},
        date="2026-01-01",
        extra={"kind": kind, "seed": seed},
    )
    return Trace(
        meta=meta,
        layers=np.arange(layers, dtype=np.int64),
        heads=np.arange(heads, dtype=np.int64),
        positions=p.astype(np.int64),
        entropy=np.broadcast_to(np.log(keys), shape).astype(np.float32),
        max_logit=max_logit.astype(np.float32),
        lse=(max_logit + np.log(keys)).astype(np.float32),
        sink_mass=np.broadcast_to(np.minimum(SINK_TOKENS, keys) / keys, shape).astype(np.float32),
        dist_mass=np.broadcast_to(mass, (*shape, mass.shape[1])).astype(np.float16),
        dist_edges=edges,
        profile_rows=rows.astype(np.int64),
        profile_dist=dist.astype(np.int64),
        logit_profile=np.broadcast_to(prof, (layers, heads, rows.size, dist.size)).astype(np.float32),
        hidden_layers=np.arange(hidden_layers, dtype=np.int64),
        hidden_positions=p.astype(np.int64),
        hidden=_hidden(n, hidden_layers, hidden_dim, hidden_planted, outliers, seed),
        nll=nll.astype(np.float32),
        profile_band=band,
    )


def make_comparison(n: int = 512, layers: int = 2, heads: int = 3, train_len: int = 128, **kw) -> Comparison:
    """Baseline ("uniform") and "lambda" ("flat") traces of the same synthetic text.

    >>> make_comparison(n=64, train_len=16).labels
    ['baseline', 'lambda']
    """
    base = make_trace(n, layers, heads, train_len, label="baseline", kind="uniform", **kw)
    patched = make_trace(n, layers, heads, train_len, label="lambda", kind="flat", **kw)
    return Comparison({"baseline": base, "lambda": patched})


__all__ = [
    "HIDDEN_NOISE",
    "HIDDEN_SCALE",
    "NLL_BASE",
    "NLL_GROWTH",
    "SINK_OFFSET",
    "SINK_TOKENS",
    "log_bin_edges",
    "logit_base",
    "make_comparison",
    "make_trace",
    "planted_growth",
]
