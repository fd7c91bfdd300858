"""The one attention kernel: causal, Λ-shaped or windowed attention with an optional distance cap.

It serves both the LM-Infinite patch and the statistics capture, so baseline and patched runs go
through the same code and produce the same kinds of results. Three paths compute the same function:

* fused (`fused.py`): for prefill without statistics, the local band runs through the backend's
  fused attention (which returns the log-sum-exp) and the few far keys are merged in exactly;
* decode (`decode.py`): one query row without statistics: the window as one fused piece, the
  far keys merged in exactly;
* explicit (here): block by block over query rows, fp32 scores for the keys a row can see
  (window + far keys), softmax in fp32, optional statistics. Used for cached chunks, ALiBi,
  logit soft-capping and whenever statistics are requested.

Memory is O(rows_per_block x (n_local + n_global)) per head; nothing n x n is ever allocated
except for plain causal attention with `Plan.is_full`, where the block is rows x keys.

With `Plan.top_k > 0` (the "top-k middle tokens" variant) the last query row is recomputed by
`middle.py` with its best middle keys; every other row is exactly what the plan without top_k
gives. Statistics are not available for that variant.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import InvalidArgumentError
from .decode import decode_attend, decode_supported
from .fused import fused_attend, fused_supported
from .middle import has_middle, last_row_with_middle
from .rotary import RotaryOps
from .spec import Plan
from .stats import StatsRequest, reduce_block

BLOCK_ELEMENTS = 1 << 22  # fp32 score elements per block (16 MB per tensor: the passes over a
# block stay in cache; 64 MB blocks ran 2.5x slower here)
MASKED = -1e30  # score of a pair not attended: exp() gives exactly 0, and 0 * MASKED stays finite


def attend(
    q: torch.Tensor,  # (B, H, Nq, D) already rotated by the model
    k: torch.Tensor,  # (B, Hkv, Nk, D) already rotated, KV cache included
    v: torch.Tensor,  # (B, Hkv, Nk, Dv)
    plan: Plan,
    *,
    scaling: float,
    q_pos: torch.Tensor | None = None,  # (Nq,) int64 query positions
    k_pos: torch.Tensor | None = None,  # (Nk,) int64 key positions, ascending
    rope: RotaryOps | None = None,
    alibi: torch.Tensor | None = None,  # (H,) slopes: bias = -slope * distance
    softcap: float | None = None,
    stats: StatsRequest | None = None,
) -> torch.Tensor:
    """Attention output (B, Nq, H, Dv), contiguous, in v's dtype.

    Example:
        >>> q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)
        >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        >>> out = attend(q, k, v, Plan(), scaling=0.5)
        >>> torch.allclose(out.transpose(1, 2), ref, atol=1e-5)
        True
    """
    nq, nk = q.shape[2], k.shape[2]
    dev = q.device
    if k_pos is None:
        k_pos = torch.arange(nk, device=dev)
    if q_pos is None:
        q_pos = k_pos[nk - nq :]
    q_pos, k_pos = q_pos.to(dev, torch.int64), k_pos.to(dev, torch.int64)
    if plan.cap and rope is None and alibi is None:
        plan = replace(plan, cap=False)  # no positions to cap
    if plan.top_k > 0:
        if stats is not None:
            raise InvalidArgumentError(
                "attention statistics cannot be captured with the top-k middle-token variant (top_k > 0): "
                "its last row attends keys the statistics do not describe. Capture with top_k=0, or limit "
                "the captured layers to those below top_k_from_layer."
            )
        if has_middle(plan, q_pos[-1], k_pos):
            last = last_row_with_middle(q[:, :, -1:], k, v, plan, scaling, q_pos[-1], k_pos, rope, alibi,
                                        softcap)
            if nq == 1:
                return last
            # all rows through the ordinary path (rows[:-1] bitwise as without top_k, the fused
            # prefill path included), then the last row replaced: one extra row of work
            out = attend(q, k, v, replace(plan, top_k=0), scaling=scaling, q_pos=q_pos, k_pos=k_pos,
                         rope=rope, alibi=alibi, softcap=softcap)
            out[:, -1:] = last
            return out
        plan = replace(plan, top_k=0)
    if stats is not None and stats.rows is not None:
        # output through the ordinary path; statistics only for the requested rows, same arithmetic
        out = attend(q, k, v, plan, scaling=scaling, q_pos=q_pos, k_pos=k_pos, rope=rope, alibi=alibi,
                     softcap=softcap)
        sel = stats.rows.to(dev)
        explicit_attend(q[:, :, sel], k, v, plan, scaling, q_pos[sel], k_pos, rope, alibi, softcap, stats,
                        need_output=False)
        return out
    simple = stats is None and alibi is None and softcap is None
    if simple and fused_supported(q, nq, nk, q_pos, k_pos):
        return fused_attend(q, k, v, plan, scaling, rope, q_pos)
    if decode_supported(q, alibi, softcap, stats):
        return decode_attend(q, k, v, plan, scaling, rope, q_pos, k_pos, _far_keys(plan, k_pos))
    return explicit_attend(q, k, v, plan, scaling, q_pos, k_pos, rope, alibi, softcap, stats)


def _far_keys(plan: Plan, k_pos: torch.Tensor) -> int:
    """Number of leading keys that may be attended as far (global) keys."""
    if plan.n_local is None or plan.n_global == 0:
        return 0
    if plan.n_global is None:
        return k_pos.shape[0]
    return int(torch.searchsorted(k_pos, plan.n_global))


def explicit_attend(q, k, v, plan, scaling, q_pos, k_pos, rope, alibi, softcap, stats, need_output=True):
    """Block-by-block fp32 attention; see `attend` for the arguments. With need_output=False
    only the statistics are computed (the output stays uninitialised)."""
    B, H, nq, D = q.shape
    hkv, dv = k.shape[1], v.shape[-1]
    g = H // hkv
    out = torch.empty(B, nq, H, dv, dtype=v.dtype, device=q.device)
    qg = q.reshape(B, hkv, g, nq, D)
    kf, vf = k.float()[:, :, None], v.float()[:, :, None]  # (B, Hkv, 1, Nk, D)
    slopes = alibi.float().to(q.device).view(1, hkv, g, 1, 1) if alibi is not None else None
    n_far = _far_keys(plan, k_pos)
    k_far = kf[..., :n_far, :]
    if plan.cap and rope is not None and n_far:
        k_far = rope.move(k[:, :, :n_far], k_pos[:n_far], 0)[:, :, None]  # far keys at position 0
    rows = _rows_per_block(plan, q_pos, k.shape[2], n_far, B * H)
    for a in range(0, nq, rows):
        b = min(nq, a + rows)
        qp = q_pos[a:b]
        first = 0 if plan.n_local is None else int(torch.searchsorted(k_pos, qp[0] - plan.n_local + 1))
        last = int(torch.searchsorted(k_pos, qp[-1], right=True))
        d_loc = qp[:, None] - k_pos[None, first:last]  # (nb, Kl)
        ok_loc = (d_loc >= 0) if plan.n_local is None else (d_loc >= 0) & (d_loc < plan.n_local)
        s = _scores(qg[..., a:b, :].float(), kf[..., first:last, :], scaling, softcap)
        if slopes is not None:
            s = s - slopes * d_loc
        parts_s, parts_v, parts_d, parts_ok = [s], [vf[..., first:last, :]], [d_loc], [ok_loc]
        fe = 0 if plan.n_local is None else min(n_far, int(torch.searchsorted(k_pos, qp[-1] - plan.n_local + 1)))
        if fe > 0:
            d_far = qp[:, None] - k_pos[None, :fe]
            qb = qg[..., a:b, :]
            if plan.cap and rope is not None:
                qb = rope.move(q[:, :, a:b], qp, plan.limit).reshape(B, hkv, g, b - a, D)
            s_far = _scores(qb.float(), k_far[..., :fe, :], scaling, softcap)
            if slopes is not None:
                s_far = s_far - slopes * (plan.limit if plan.cap else d_far)
            parts_s.insert(0, s_far)
            parts_v.insert(0, vf[..., :fe, :])
            parts_d.insert(0, d_far)
            parts_ok.insert(0, d_far >= plan.n_local)
        s = torch.cat(parts_s, -1) if len(parts_s) > 1 else parts_s[0]
        ok = torch.cat(parts_ok, -1) if len(parts_ok) > 1 else parts_ok[0]
        s = s.masked_fill(~ok, MASKED)  # (B, Hkv, g, nb, K); every row sees at least itself
        top = s.amax(-1, keepdim=True)
        p = torch.exp(s - top)  # one exp pass, reused for the log-sum-exp
        z = p.sum(-1, keepdim=True)
        p.div_(z)
        lse = (top + z.log()).squeeze(-1)
        if need_output:
            vv = torch.cat(parts_v, -2) if len(parts_v) > 1 else parts_v[0]
            o = _grouped_matmul(p, vv[:, :, 0])  # (B, Hkv, g, nb, Dv)
            out[:, a:b] = o.reshape(B, H, b - a, dv).transpose(1, 2).to(v.dtype)
        if stats is not None:
            dist = torch.cat(parts_d, -1) if fe else d_loc
            keys = torch.cat([k_pos[:fe], k_pos[first:last]]) if fe else k_pos[first:last]
            flat = (B, H, b - a)
            with torch.no_grad():
                res = reduce_block(s.reshape(*flat, -1), p.reshape(*flat, -1), lse.reshape(flat), dist, ok,
                                   keys, qp, stats, n_far=fe)
            stats.sink(slice(a, b), res)
    return out


def _rows_per_block(plan: Plan, q_pos: torch.Tensor, nk: int, n_far: int, bh: int) -> int:
    """Query rows per block: scores of rows x keys-in-range stay under BLOCK_ELEMENTS, and for
    sparse (strided) rows the key range a block spans wastes at most about a quarter."""
    nq = q_pos.shape[0]
    if plan.n_local is None:
        return max(1, min(nq, BLOCK_ELEMENTS // max(1, bh * nk)))
    step = max(1.0, float(q_pos[-1] - q_pos[0]) / max(1, nq - 1))
    by_waste = max(1, int(plan.n_local / (4 * step)))
    by_memory = BLOCK_ELEMENTS // max(1, bh * (int(1.25 * plan.n_local) + n_far))
    return max(1, min(nq, by_waste, by_memory))


def _grouped_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, Hkv, g, nb, X) @ (B, Hkv, X, Y) -> (B, Hkv, g, nb, Y), without copying b once per group
    (broadcasting a (B, Hkv, 1, X, Y) operand makes batched matmul expand it g times)."""
    B, hkv, g, nb, x = a.shape
    return (a.reshape(B, hkv, g * nb, x) @ b).view(B, hkv, g, nb, -1)


def _scores(qb: torch.Tensor, kb: torch.Tensor, scaling: float, softcap: float | None) -> torch.Tensor:
    """Scaled scores (B, Hkv, g, nb, K) of queries (B, Hkv, g, nb, D) against keys (B, Hkv, 1, K, D)."""
    s = _grouped_matmul(qb * scaling, kb[:, :, 0].transpose(-1, -2))  # scale the few query rows
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    return s
