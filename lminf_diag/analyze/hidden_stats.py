"""Per-window geometry of hidden states: the bulk, massive activations, subspaces, nearest neighbours.

Vocabulary shared by `analyze.positions`, `analyze.probe` and `analyze.manifold`:

- *bulk bound* `b = max(64, n_global)` (capped at T/2 so that short training lengths keep an
  in-range bulk): positions >= b are the *bulk*, positions < b the *first tokens*;
- *in-range bulk*: positions in [b, T); *beyond*: positions >= T;
- *massive activation*: a state whose norm exceeds MASSIVE_FACTOR x the median norm of its
  window's bulk (position 0 of real models sits about 100x above it). Such states are left out
  of every fit (probe, PCA, reference bulk) and counted, never silently kept.

Example:
    >>> x = np.ones((6, 3)); x[0] *= 1000.0
    >>> massive_mask(x, np.arange(6), bound=1).tolist()
    [True, False, False, False, False, False]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import subspace_angles
from sklearn.utils.extmath import randomized_svd

from lminf_diag.analyze.base import MAX_POINTS, as_float, downsample_index

BULK_START = 64  # first position of the bulk (at least; n_global when larger)
MASSIVE_FACTOR = 20.0  # a state with norm > 20 x the bulk's median norm is a massive activation
NN_CHUNK = 256  # query rows per distance block in nearest-neighbour searches


@dataclass
class LayerSubspace:
    """One hidden layer of one label in one window (window = independent text window).

    Probe values are held-out R² of this window under folds grouped by window (NaN with one window).
    """

    hidden_layer: int  # 0 = embeddings, i = after layer i
    probe_r2: float = float("nan")  # in-range bulk, this window held out
    probe_r2_first: float = float("nan")  # first tokens 1..b-1 (in range), this window held out
    probe_r2_null: float = float("nan")  # in-range bulk, positions shuffled within each window
    first_token_distance: float = float("nan")  # in RMS spreads of the baseline's in-range bulk
    principal_angles: np.ndarray = field(default_factory=lambda: np.empty(0))  # (k,) deg, in-range vs beyond
    null_angles: np.ndarray = field(default_factory=lambda: np.empty(0))  # (k,) deg, two in-range halves
    off_manifold: float = float("nan")  # NN-distance ratio beyond T / held-out in range
    n_massive: int = 0  # states left out as massive activations
    distance_profile: np.ndarray = field(default_factory=lambda: np.empty(0))  # (M,) RMS spreads
    explained_variance: np.ndarray = field(default_factory=lambda: np.empty(0))  # (k,) ratios, bulk PCA
    coords: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # (S, 2) PCA view (window 0)
    coord_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # (S,)
    coord_range: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))  # (2, 2) axis limits


def bulk_bound(n_global: int, train_len: int | None, start: int = BULK_START) -> int:
    """First bulk position: max(start, n_global), capped at T/2 (>= 1) when T is known.

    >>> bulk_bound(4, 8192), bulk_bound(100, 8192), bulk_bound(4, 64)
    (64, 100, 32)
    """
    b = max(int(start), int(n_global))
    if train_len is not None:
        b = min(b, max(1, int(train_len) // 2))
    return max(1, b)


def massive_mask(x: np.ndarray, pos: np.ndarray, bound: int, factor: float = MASSIVE_FACTOR) -> np.ndarray:
    """(M,) True where a state's norm exceeds `factor` x the median norm of the states at pos >= bound."""
    norms = np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1)  # (M,)
    ref = norms[pos >= bound]
    med = float(np.median(ref)) if ref.size else float(np.median(norms)) if norms.size else 0.0
    return norms > factor * med if med > 0 else np.zeros(len(pos), bool)


def layer_states(trace, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (M', D) float32, pos (M',)) of one hidden layer of a trace, non-finite states dropped."""
    avail = [int(k) for k in np.asarray(trace.hidden_layers)]
    x = np.asarray(trace.hidden[avail.index(int(layer))], dtype=np.float32)  # (M, D)
    pos = np.asarray(trace.hidden_positions, dtype=np.int64)
    ok = np.isfinite(x).all(axis=1)
    return x[ok], pos[ok]


def centroid_spread(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(centroid (D,), RMS spread sqrt(mean ||x - centroid||^2)) of the rows of x."""
    x = np.asarray(x, dtype=np.float64)
    c = x.mean(0)
    return c, float(np.sqrt(np.mean(np.sum((x - c) ** 2, axis=1))))


def subspace(x: np.ndarray, k: int) -> np.ndarray | None:
    """(D, k) orthonormal basis of the top-k principal directions of x (rows), None if too few rows."""
    if x.shape[0] <= k:
        return None
    xc = np.asarray(x, dtype=np.float32) - np.asarray(x, dtype=np.float32).mean(0)
    if min(x.shape) <= 4 * k:
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
    else:  # top-k only: far cheaper than a full SVD of an (m, 4096) window
        _, _, vt = randomized_svd(xc, k, n_iter=10, random_state=0)
    return vt[:k].T.astype(np.float64)


def mean_angles(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """(k,) principal angles in degrees between the top-k PCA subspaces of two state sets (empty if undefined).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5)) * [10, 5, 0.1, 0.1, 0.1]
    >>> float(mean_angles(x[:100], x[100:], 2).max()) < 5
    True
    """
    sa, sb = subspace(a, k), subspace(b, k)
    if sa is None or sb is None:
        return np.empty(0)
    return np.degrees(subspace_angles(sa, sb))


def standardizer(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), std (D,)) of reference rows; std floored at 1e-3 x its median (no division by ~0)."""
    ref = np.asarray(ref, dtype=np.float64)
    mu, sd = ref.mean(0), ref.std(0)
    floor = 1e-3 * float(np.median(sd)) if np.median(sd) > 0 else 1.0
    return mu, np.maximum(sd, floor)


def nn_distance(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(Q,) Euclidean distance of each query row to its nearest reference row (blockwise, float64).

    >>> nn_distance(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 1.0], [3.0, 0.0]])).tolist()
    [1.0, 4.0]
    """
    q, r = np.asarray(query, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not len(q) or not len(r):
        return np.full(len(q), np.nan)
    r2 = np.sum(r * r, axis=1)  # (R,)
    out = np.empty(len(q))
    for s in range(0, len(q), NN_CHUNK):
        blk = q[s : s + NN_CHUNK]  # (C, D)
        d2 = np.sum(blk * blk, axis=1)[:, None] + r2[None, :] - 2.0 * blk @ r.T  # (C, R)
        out[s : s + NN_CHUNK] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def pca_view(
    x: np.ndarray, pos: np.ndarray, fit: np.ndarray, k: int, first: int, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA fitted on the rows `fit` (bool (M,)), every row projected.

    Returns (explained variance ratios (k,), coords (S, 2), their positions (S,), axis range (2, 2)):
    S <= max_points rows, positions < `first` always kept; the axis range is the fitted rows' 1..99%
    quantiles padded by 15%, so one massive outlier cannot squash the view.
    """
    xf = np.asarray(x[fit], dtype=np.float64)
    if xf.shape[0] < 3:
        return np.full(k, np.nan), np.empty((0, 2)), np.empty(0, np.int64), np.full((2, 2), np.nan)
    mu = xf.mean(0)
    u, s, vt = np.linalg.svd(xf - mu, full_matrices=False)
    var = s**2 / max(float(np.sum(s**2)), 1e-300)
    ev = np.full(k, np.nan)
    ev[: min(k, var.size)] = var[:k]
    basis = vt[:2].T if vt.shape[0] >= 2 else np.column_stack([vt[0], np.zeros(vt.shape[1])])  # (D, 2)
    proj = (np.asarray(x, dtype=np.float64) - mu) @ basis  # (M, 2)
    lo, hi = np.quantile(proj[fit], [0.01, 0.99], axis=0)  # (2,), (2,)
    pad = 0.15 * np.maximum(hi - lo, 1e-12)
    rng = np.stack([lo - pad, hi + pad], axis=1)  # (2 axes, [low, high])
    head = np.nonzero(pos < first)[0]
    sample = np.union1d(head, downsample_index(len(pos), max(1, max_points - head.size)))
    return ev, proj[sample], pos[sample], rng


def summary_angle(angles: np.ndarray) -> float:
    """Mean principal angle in degrees (NaN when undefined)."""
    return as_float(np.mean(angles)) if np.size(angles) else float("nan")


def layer_subspace(x: np.ndarray, pos: np.ndarray, k: int, args: dict) -> LayerSubspace:
    """Compatibility shim: the grouped bulk position probe on stacked windows, as a LayerSubspace.

    `x` (M, D) stacks several windows; `args["groups"]` (M,) names each row's window (when absent,
    a new window starts wherever the position does not increase). Only `probe_r2` (the median
    held-out R² over windows, positions >= args.get("bulk_start", 64)) and `explained_variance`
    are filled; one window gives NaN (no grouped fold exists). Prefer `analyze.probe.grouped_probe`.
    """
    from lminf_diag.analyze.probe import grouped_probe

    pos = np.asarray(pos, dtype=np.int64)
    groups = args.get("groups")
    if groups is None:
        groups = np.concatenate([[0], np.cumsum(np.diff(pos) <= 0)])
    groups = np.asarray(groups)
    bound = int(args.get("bulk_start", BULK_START))
    xs, ys = [], []
    for g in np.unique(groups):
        sel = groups == g
        xg, pg = x[sel], pos[sel]
        keep = (pg >= bound) & ~massive_mask(xg, pg, bound)
        xs.append(xg[keep])
        ys.append(np.log(pg[keep] + 1.0))
    r2 = grouped_probe(xs, ys)
    nc = int(args.get("n_components", 2))
    ev, *_ = pca_view(x, pos, pos >= bound, nc, 0, max_points=2)
    med = float(np.nanmedian(r2)) if np.isfinite(r2).any() else float("nan")
    return LayerSubspace(hidden_layer=k, probe_r2=med, explained_variance=ev)
