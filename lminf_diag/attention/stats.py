"""Streaming attention statistics, reduced block by block from the scores the kernel used.

Nothing n x n is kept: for each block of query rows the kernel hands its fp32 scores `s`
(B, H, nb, K), probabilities `p` and the block's key columns to `reduce_block`, which returns
per-row statistics; the capture layer writes them into its buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .explicit import Columns


def log_edges(max_distance: int, per_octave: int = 1) -> np.ndarray:
    """Log-spaced distance bin edges [0, 1, 2, 4, ...] covering 0..max_distance (inclusive).

    Example:
        >>> log_edges(10).tolist()
        [0, 1, 2, 4, 8, 16]
    """
    edges = [0, 1]
    while edges[-1] <= max_distance:
        nxt = edges[-1] * 2 ** (1 / per_octave)
        edges.append(max(edges[-1] + 1, int(round(nxt))))
    return np.asarray(edges, dtype=np.int64)


def profile_grid(max_distance: int, points: int = 256) -> np.ndarray:
    """Distances at which running-max logit profiles are sampled: 0..15 then log-spaced."""
    lin = np.arange(0, min(16, max_distance + 1))
    log = np.geomspace(16, max(16, max_distance), num=points) if max_distance > 16 else np.array([])
    return np.unique(np.concatenate([lin, np.round(log).astype(np.int64)])).astype(np.int64)


PAIR_FRACTION = 8  # the paired logit bands hold m = train_len // PAIR_FRACTION distances each


def pair_anchors(train_len: int) -> dict[int, tuple[int, int, int]]:
    """{pivot: (pivot - m, pivot, pivot + m)} for the pivots T (the real test) and T // 2 (its null).

    Factor 1 compares, row by row, the largest logit at distances (pivot, pivot + m] with the
    largest at the m nearest distances below, (pivot - m, pivot]: equal key counts, same query.
    At pivot T // 2 nothing is out of distribution: that is the null.

    >>> pair_anchors(8192)
    {4096: (3072, 4096, 5120), 8192: (7168, 8192, 9216)}
    """
    m = max(1, int(train_len) // PAIR_FRACTION)
    return {p: (p - m, p, p + m) for p in (int(train_len) // 2, int(train_len)) if p - m >= 0}


@dataclass
class StatsRequest:
    """What one layer should measure, and where the per-block results go.

    sink:  called as sink(rows: slice, stats: dict[str, Tensor]) for each query block; the dict
           holds entropy, max_logit, lse, sink_mass (B, H, nb), dist_mass (B, H, nb, bins) and
           optionally profiles: list of (row_position, (B, H, P) running max, (B, H, P) band max)
           for profile rows (see `_profiles`).
    """

    sink: Callable[[slice, dict], None]
    sink_tokens: int = 4
    dist_edges: np.ndarray = field(default_factory=lambda: log_edges(1 << 20))
    profile_rows: tuple[int, ...] = ()
    profile_dist: np.ndarray = field(default_factory=lambda: profile_grid(1 << 20))
    rows: torch.Tensor | None = None  # query-row indices to measure (None = every row); sink slices index these


def reduce_block(
    s: torch.Tensor,  # (B, H, nb, K) fp32 scores, MASKED (-1e30) where not attended
    p: torch.Tensor,  # (B, H, nb, K) fp32 probabilities (exactly 0 where not attended)
    cols: Columns,  # explicit.Columns: positions of the block's key columns and which rows attend them
    req: StatsRequest,
    scratch: torch.Tensor | None = None,  # (B, H, nb, K) fp32 buffer that may be overwritten
    fused: dict | None = None,  # top, lse, entropy (B, H, nb) and ge (B, H, nb, edges) already computed
) -> dict:
    """Per-row statistics of one block of query rows; each value is (B, H, nb) or (B, H, nb, bins)."""
    if fused is None:
        top = s.amax(-1)  # every row attends at least itself
        lse = _log_sum_exp(s, p, cols, top)
        ps = torch.mul(p, s) if scratch is None else torch.mul(p, s, out=scratch)
        ent, ge = lse - ps.sum(-1), None  # -sum p log p with log p = s - lse
    else:
        top, lse, ent, ge = fused["top"], fused["lse"], fused["entropy"], fused["ge"]
    out = {
        "entropy": ent,
        "max_logit": top,
        "lse": lse,
        "sink_mass": _sink_mass(p, cols, req.sink_tokens),
        "dist_mass": _dist_mass(p, cols, req.dist_edges, ge),
    }
    q_pos = cols.q_pos
    if req.profile_rows and not set(req.profile_rows).isdisjoint(q_pos.tolist()):  # rows of this block
        dist = cols.distances().masked_fill(~cols.attended(0, s.shape[-1]), -1)
        out["profiles"] = _profiles(s, dist, q_pos, req)
    return out


def local_counts(cols: Columns, edges: torch.Tensor) -> torch.Tensor:
    """(nb, edges) int64: the number of local keys at distance >= each edge, for each row; the
    keys at distance >= an edge are the first that many local columns (distance decreases along
    the columns)."""
    return torch.searchsorted(cols.loc_pos, cols.q_pos[:, None] - edges[None, :], right=True)


def _log_sum_exp(s, p, cols, top) -> torch.Tensor:
    """lse = s_j - log p_j for any attended key j; j is the likelier of each row's first and last
    attended local key (no pass over the block). Rows where both are below 1e-30 (log p_j would
    lose precision) use the largest probability, exp(top - lse), instead."""
    fe = cols.fe
    idx = torch.stack((fe + cols.lo, fe + cols.hi - 1), -1).expand(*p.shape[:-1], 2)  # (B, H, nb, 2)
    pj, sj = p.gather(-1, idx), s.gather(-1, idx)
    pick = pj.argmax(-1, keepdim=True)
    pj, sj = pj.gather(-1, pick).squeeze(-1), sj.gather(-1, pick).squeeze(-1)
    lse = sj - torch.log(pj)
    low = pj < 1e-30
    if bool(low.any()):
        lse = torch.where(low, top - torch.log(p.amax(-1)), lse)
    return lse


def _sink_mass(p, cols, n: int) -> torch.Tensor:
    """Mass on the keys at positions < n (a prefix of the far columns and of the local ones)."""
    fe = cols.fe
    a1 = int(torch.searchsorted(cols.far_pos, n)) if fe else 0
    a2 = int(torch.searchsorted(cols.loc_pos, n))
    return p[..., :a1].sum(-1) + p[..., fe : fe + a2].sum(-1)


def _dist_mass(p, cols, edges_np, ge: torch.Tensor | None = None) -> torch.Tensor:
    """Mass per distance bin. Far keys: scatter-add. Local keys: the keys at distance >= edge are
    a prefix of each row's local columns, so a bin's mass is the difference of two prefix sums
    (`ge`, (B, H, nb, edges), when already computed)."""
    edges = torch.as_tensor(edges_np, device=p.device)
    nbins = len(edges_np) - 1
    out = torch.zeros(*p.shape[:-1], nbins, dtype=p.dtype, device=p.device)
    fe = cols.fe
    if fe:
        dist = cols.q_pos[:, None] - cols.far_pos[None, :]
        idx = (torch.bucketize(dist.clamp(min=0), edges, right=True) - 1).clamp(0, nbins - 1)
        out.scatter_add_(-1, idx.expand(*p.shape[:-1], fe), p[..., :fe])
    if ge is None and cols.loc_pos.shape[0]:
        ge = prefix_sums(p[..., fe:], local_counts(cols, edges))  # (B, H, nb, edges)
    if ge is not None:
        out += ge[..., :-1] - ge[..., 1:]
    return out


def prefix_sums(x: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    """Sums of the first cnt[r, e] entries of each row r of x: (..., nb, K), (nb, E) -> (..., nb, E).

    Within a block the counts of one column e differ by at most the rows' spread, so each is a
    segment sum up to the smallest count (shared by all rows: one pass over x in all) plus a
    short remainder per row, read from one window of columns per e. For widely spread rows one
    cumulative sum is cheaper.

    Example:
        >>> prefix_sums(torch.ones(2, 5), torch.tensor([[0, 3], [5, 1]])).tolist()
        [[0.0, 3.0], [5.0, 1.0]]
    """
    nb, E = cnt.shape
    lead, K = x.shape[:-2], x.shape[-1]
    cmin = cnt.min(0).values  # (E,)
    width = int((cnt.max(0).values - cmin).max())
    if width * E > K // 2:
        cs = x.cumsum(-1)
        return cs.gather(-1, (cnt - 1).clamp(min=0).expand(*lead, nb, E)) * (cnt > 0)
    cuts, which = torch.unique(cmin, return_inverse=True)  # ascending
    segs, prev = [], 0
    for c in cuts.tolist():
        segs.append(x[..., prev:c].sum(-1))
        prev = c
    shared = torch.stack(segs, -1).cumsum(-1)[..., which]  # (..., nb, E)
    if width == 0:
        return shared
    starts = cmin.clamp(max=K - width)  # (E,) windows [start, start + width) inside the row
    tiles = torch.stack([x[..., a : a + width] for a in starts.tolist()], -2)  # (..., nb, E, W)
    col = starts[:, None] + torch.arange(width, device=x.device)[None, :]  # (E, W)
    valid = (col[None] >= cmin[None, :, None]) & (col[None] < cnt[:, :, None])  # (nb, E, W)
    return shared + tiles.mul_(valid.to(x.dtype)).sum(-1)


def _profiles(s, dist, q_pos, req) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(row_position, running max (B, H, P), band max (B, H, P)) for the profile rows of the block.

    The running max at grid point d_j is the largest logit over distances <= d_j; the band max
    is the largest over distances in (d_{j-1}, d_j] (d_{-1} = -1), NaN where the row attends no
    key in the band. Distances are true distances (capped far keys sit at their true distance).
    """
    wanted = set(req.profile_rows)
    grid = torch.as_tensor(req.profile_dist, device=s.device)
    res = []
    for r, pos in enumerate(q_pos.tolist()):
        if pos not in wanted:
            continue
        ok = dist[r] >= 0
        d = dist[r][ok]  # (A,) distances of the keys this row attends (at most n_global + n_local under the Λ)
        band_of = torch.searchsorted(grid, d)  # (A,) band j holds distances in (d_{j-1}, d_j]
        band = torch.full((*s.shape[:2], len(grid) + 1), float("-inf"), device=s.device)
        band.scatter_reduce_(-1, band_of.expand(*s.shape[:2], d.shape[0]), s[:, :, r, ok], "amax")
        band = band[..., : len(grid)]
        run = band.cummax(-1).values  # running max over distances 0..d_j
        inside = grid <= pos
        prof = torch.full((*s.shape[:2], len(grid)), float("nan"), device=s.device)
        prof[..., inside] = run[..., inside]
        band = band.masked_fill(torch.isinf(band), float("nan"))
        res.append((pos, prof, band))
    return res
