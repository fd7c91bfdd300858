"""Streaming attention statistics, reduced block by block from the scores the kernel used.

Nothing n x n is kept: for each block of query rows the kernel hands its fp32 scores `s`
(B, H, nb, K), probabilities `p` and log-sum-exp to `reduce_block`, which returns per-row
statistics; the capture layer writes them into its buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


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


@dataclass
class StatsRequest:
    """What one layer should measure, and where the per-block results go.

    sink:  called as sink(rows: slice, stats: dict[str, Tensor]) for each query block; the dict
           holds entropy, max_logit, lse, sink_mass (B, H, nb), dist_mass (B, H, nb, bins) and
           optionally profiles: list of (row_position, (B, H, P) running max) for profile rows.
    """

    sink: Callable[[slice, dict], None]
    sink_tokens: int = 4
    dist_edges: np.ndarray = field(default_factory=lambda: log_edges(1 << 20))
    profile_rows: tuple[int, ...] = ()
    profile_dist: np.ndarray = field(default_factory=lambda: profile_grid(1 << 20))
    rows: torch.Tensor | None = None  # query-row indices to measure (None = every row); sink slices index these


def reduce_block(
    s: torch.Tensor,  # (B, H, nb, K) fp32 scores, a large negative finite value where not attended
    p: torch.Tensor,  # (B, H, nb, K) fp32 probabilities
    lse: torch.Tensor,  # (B, H, nb)
    dist: torch.Tensor,  # (nb, K) true distance q_pos - k_pos (raw, also where masked)
    ok: torch.Tensor,  # (nb, K) bool, attended pairs
    k_pos: torch.Tensor,  # (K,) key positions: n_far far keys, then local keys ascending
    q_pos: torch.Tensor,  # (nb,) query positions
    req: StatsRequest,
    n_far: int = 0,
) -> dict:
    out = {
        "entropy": lse - torch.linalg.vecdot(p, s),  # -sum p log p, log p = s - lse; p = 0 where masked
        "max_logit": s.amax(-1),
        "lse": lse,
        "sink_mass": p[..., k_pos < req.sink_tokens].sum(-1),
        "dist_mass": _dist_mass(p, dist, req.dist_edges, n_far),
    }
    if req.profile_rows and not set(req.profile_rows).isdisjoint(q_pos.tolist()):  # rows of this block
        out["profiles"] = _profiles(s, dist.masked_fill(~ok, -1), q_pos, req)
    return out


def _dist_mass(p, dist, edges_np, n_far: int) -> torch.Tensor:
    """Mass per distance bin. Far keys: scatter-add; local keys (distance decreasing along the
    key axis): a cumulative sum read at the bin edges, which costs one pass over the block."""
    edges = torch.as_tensor(edges_np, device=p.device)
    nbins = len(edges_np) - 1
    out = torch.zeros(*p.shape[:-1], nbins, dtype=p.dtype, device=p.device)
    if n_far:
        idx = (torch.bucketize(dist[:, :n_far].clamp(min=0), edges, right=True) - 1).clamp(0, nbins - 1)
        out.scatter_add_(-1, idx.expand(*p.shape[:-1], n_far), p[..., :n_far])
    loc, d = p[..., n_far:], dist[:, n_far:]
    if loc.shape[-1]:
        cs = loc.cumsum(-1)  # (B, H, nb, Kl)
        neg = (-d).contiguous()  # ascending along the key axis
        cnt = torch.searchsorted(neg, (-edges).expand(d.shape[0], -1).contiguous(), right=True)
        # mass at distance >= edge: the first cnt keys (0 when cnt = 0)
        ge = cs.gather(-1, (cnt - 1).clamp(min=0).expand(*p.shape[:-1], -1)) * (cnt > 0)
        out += ge[..., :-1] - ge[..., 1:]
    return out


def _profiles(s, dist, q_pos, req) -> list[tuple[int, torch.Tensor]]:
    wanted = set(req.profile_rows)
    grid = torch.as_tensor(req.profile_dist, device=s.device)
    res = []
    for r, pos in enumerate(q_pos.tolist()):
        if pos not in wanted:
            continue
        ok = dist[r] >= 0
        vals = torch.full((*s.shape[:2], pos + 1), float("-inf"), device=s.device)
        vals[..., dist[r][ok]] = s[:, :, r, ok]
        run = vals.cummax(-1).values  # running max over distance 0..d
        inside = grid <= pos
        prof = torch.full((*s.shape[:2], len(grid)), float("nan"), device=s.device)
        prof[..., inside] = run[..., grid[inside]]
        res.append((pos, prof))
    return res
