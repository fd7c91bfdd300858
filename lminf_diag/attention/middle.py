"""The "top-k middle tokens" variant of LM-Infinite: the last query row with its best middle keys.

Later versions of the LM-Infinite reference code add, for passkey retrieval, an option where the
row that produces the next token (the last row of a prefill, every single-row decoding step)
attends, in the upper layers, to a few keys the Λ-shape would drop. For that one row at
position i, with keys at true positions `k_pos` (ascending):

    far     j < n_global and i - j >= n_local   distance `limit` when capped, else true distance
    middle  the other keys with i - j >= n_local  distance `top_k_distance` for all of them
    local   0 <= i - j < n_local                  true distance

Each query head keeps its `top_k` highest-scoring middle keys (scores at `top_k_distance`: RoPE
moves the query to position `top_k_distance` and the keys to 0 with the model's own table,
ALiBi adds -slope * top_k_distance, models without positions move nothing), and one fp32
softmax runs over far + chosen middle + local keys. O(Nk) work for the one row.

Example:
    >>> from lminf_diag.attention.spec import Plan
    >>> q, k, v = torch.randn(1, 2, 1, 4), torch.randn(1, 1, 9, 4), torch.randn(1, 1, 9, 4)
    >>> plan = Plan(n_local=3, n_global=1, top_k=2, top_k_distance=1)
    >>> middle_bounds(plan, 8, torch.arange(9))        # far [0, 1), middle [1, 6), local [6, 9)
    (1, 6, 9)
    >>> last_row_with_middle(q, k, v, plan, scaling=0.5, q_pos=8, k_pos=torch.arange(9)).shape  # (B, 1, H, Dv)
    torch.Size([1, 1, 2, 4])
"""

from __future__ import annotations

import torch

from .rotary import RotaryOps
from .spec import Plan


def middle_bounds(plan: Plan, q_pos_last: int, k_pos: torch.Tensor) -> tuple[int, int, int]:
    """(fe, we, le) for the row at `q_pos_last`: keys [0, fe) far, [fe, we) middle, [we, le) local."""
    qp = int(q_pos_last)
    le = int(torch.searchsorted(k_pos, qp, right=True))
    if plan.n_local is None:
        return 0, 0, le
    we = int(torch.searchsorted(k_pos, qp - plan.n_local, right=True))  # keys outside the window
    if plan.n_global is None:
        n_far = k_pos.shape[0]
    else:
        n_far = int(torch.searchsorted(k_pos, plan.n_global)) if plan.n_global else 0
    return min(n_far, we), we, le


def has_middle(plan: Plan, q_pos_last: int, k_pos: torch.Tensor) -> bool:
    """True when the plan asks for top-k middle keys and the row at `q_pos_last` has some."""
    if plan.top_k <= 0 or plan.n_local is None:
        return False
    fe, we, _ = middle_bounds(plan, q_pos_last, k_pos)
    return we > fe


def _scores(qb: torch.Tensor, kb: torch.Tensor, scaling: float, softcap: float | None) -> torch.Tensor:
    s = (qb @ kb.transpose(-1, -2)) * scaling  # (B, Hkv, g, 1, K)
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    return s


def last_row_with_middle(
    q_last: torch.Tensor,  # (B, H, 1, D) already rotated by the model (at q_pos)
    k: torch.Tensor,  # (B, Hkv, Nk, D) already rotated (at k_pos)
    v: torch.Tensor,  # (B, Hkv, Nk, Dv)
    plan: Plan,
    *,
    scaling: float,
    q_pos: int | torch.Tensor,  # the last row's position (an int, or a one-element tensor)
    k_pos: torch.Tensor,  # (Nk,) int64, ascending; may be a sparse set of positions
    rope: RotaryOps | None = None,
    alibi: torch.Tensor | None = None,  # (H,) slopes: bias = -slope * distance
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention output of the last row with its top-k middle keys: (B, 1, H, Dv) in v's dtype.

    Grouped-query attention: H query heads share Hkv key heads; the top-k is chosen per query head.
    """
    B, H, _, D = q_last.shape
    hkv, dv = k.shape[1], v.shape[-1]
    g = H // hkv
    dev = q_last.device
    k_pos = k_pos.to(dev, torch.int64)
    qp = int(q_pos)
    qpt = torch.tensor([qp], device=dev, dtype=torch.int64)
    fe, we, le = middle_bounds(plan, qp, k_pos)
    slopes = alibi.float().to(dev).view(1, hkv, g, 1, 1) if alibi is not None else None

    def at(dist: int) -> torch.Tensor:  # the query seen from keys moved to position 0
        qx = rope.move(q_last, qpt, dist) if rope is not None else q_last.float()
        return qx.reshape(B, hkv, g, 1, D)

    def keys_at_zero(a: int, b: int) -> torch.Tensor:  # (B, Hkv, 1, b - a, D) fp32
        kx = rope.move(k[:, :, a:b], k_pos[a:b], 0) if rope is not None else k[:, :, a:b].float()
        return kx[:, :, None]

    q32 = q_last.float().reshape(B, hkv, g, 1, D)
    parts_s, parts_v = [], []
    if fe:  # far keys: capped as in the kernel
        capped = plan.cap and (rope is not None or alibi is not None)
        if capped and rope is not None:
            s_far = _scores(at(plan.limit), keys_at_zero(0, fe), scaling, softcap)
        else:
            s_far = _scores(q32, k[:, :, None, :fe].float(), scaling, softcap)
        if slopes is not None:
            s_far = s_far - slopes * (plan.limit if capped else (qpt - k_pos[:fe]).float())
        parts_s.append(s_far)
        parts_v.append(v[:, :, None, :fe].float())  # (B, Hkv, 1, fe, Dv)
    if we > fe:  # middle keys: all at top_k_distance, the best top_k per query head
        s_mid = _scores(at(plan.top_k_distance), keys_at_zero(fe, we), scaling, softcap)  # (B,Hkv,g,1,M)
        if slopes is not None:
            s_mid = s_mid - slopes * plan.top_k_distance
        top, idx = s_mid.topk(min(plan.top_k, we - fe), dim=-1)  # (B, Hkv, g, 1, K)
        v_mid = v[:, :, None, fe:we].float().expand(B, hkv, g, we - fe, dv)
        parts_s.append(top)
        parts_v.append(torch.gather(v_mid, 3, idx[..., 0, :, None].expand(-1, -1, -1, -1, dv)))
    s_loc = _scores(q32, k[:, :, None, we:le].float(), scaling, softcap)
    if slopes is not None:
        s_loc = s_loc - slopes * (qpt - k_pos[we:le]).float()
    parts_s.append(s_loc)
    parts_v.append(v[:, :, None, we:le].float())
    p = torch.softmax(torch.cat(parts_s, -1), -1)
    o, a = 0.0, 0
    for s_part, v_part in zip(parts_s, parts_v, strict=True):
        n = s_part.shape[-1]
        o = o + p[..., a : a + n] @ v_part  # (B, Hkv, g, 1, Dv)
        a += n
    return o.reshape(B, H, 1, dv).transpose(1, 2).to(v.dtype)


__all__ = ["has_middle", "last_row_with_middle", "middle_bounds"]
