"""The one attention kernel: causal, Λ-shaped or windowed attention with an optional distance cap.

It serves both the LM-Infinite patch and the statistics capture, so baseline and patched runs go
through the same code and produce the same kinds of results. Three paths compute the same function:

* fused (`fused.py`): for prefill without statistics, the local band runs through the backend's
  fused attention (which returns the log-sum-exp) and the few far keys are merged in exactly;
* decode (`decode.py`): one query row without statistics: the window as one fused piece, the
  far keys merged in exactly;
* explicit (`explicit.py`): block by block over query rows, fp32 scores for the keys a row can
  see (window + far keys), softmax in fp32, optional statistics. Used for cached chunks, ALiBi,
  logit soft-capping and whenever statistics are requested.

Memory is O(rows_per_block x (n_local + n_global)) per head; nothing n x n is ever allocated
except for plain causal attention with `Plan.is_full`, where the block is rows x keys.

With `Plan.top_k > 0` (the "top-k middle tokens" variant) the last query row is recomputed by
`middle.py` with its best middle keys; every other row is exactly what the plan without top_k
gives. Statistics are not available for that variant.

Every path's entry function takes the tensors and the plan, then `attend`'s own keyword-only
parameters by name (`scaling=, q_pos=, k_pos=, rope=, alibi=, softcap=, stats=`), each path the
subset it supports.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import InvalidArgumentError
from .decode import decode_attend, decode_supported
from .explicit import explicit_attend, far_keys
from .fused import fused_attend, fused_supported
from .middle import has_middle, last_row_with_middle
from .rotary import RotaryOps
from .spec import Plan
from .stats import StatsRequest


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
            last = last_row_with_middle(q[:, :, -1:], k, v, plan, scaling=scaling, q_pos=q_pos[-1], k_pos=k_pos,
                                        rope=rope, alibi=alibi, softcap=softcap)
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
        explicit_attend(q[:, :, sel], k, v, plan, scaling=scaling, q_pos=q_pos[sel], k_pos=k_pos, rope=rope,
                        alibi=alibi, softcap=softcap, stats=stats, need_output=False)
        return out
    simple = stats is None and alibi is None and softcap is None
    if simple and fused_supported(q, nq, nk, q_pos, k_pos, plan):
        return fused_attend(q, k, v, plan, scaling=scaling, q_pos=q_pos, rope=rope)
    if decode_supported(q, alibi, softcap, stats):
        return decode_attend(q, k, v, plan, scaling=scaling, q_pos=q_pos, k_pos=k_pos, rope=rope,
                             n_far=far_keys(plan, k_pos))
    return explicit_attend(q, k, v, plan, scaling=scaling, q_pos=q_pos, k_pos=k_pos, rope=rope, alibi=alibi,
                           softcap=softcap, stats=stats)
