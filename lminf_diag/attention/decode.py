"""Fast path of the kernel for one decoding step: a single query row, no statistics.

The row's window is one contiguous run of cached keys, so it goes through the backend's fused
attention as a single piece (no copy of the window's keys or values); the few far keys before
the window (j < n_global, at the capped or cache-slot distance) are scored explicitly in fp32; both pieces
merge exactly through their log-sum-exp. Same function as `kernel.explicit_attend` for that row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .fused import _merge, _piece
from .spec import Plan

if TYPE_CHECKING:
    from .rotary import RotaryOps
    from .stats import StatsRequest


def decode_supported(q: torch.Tensor, alibi: torch.Tensor | None, softcap: float | None,
                     stats: StatsRequest | None) -> bool:
    """True for one query row without ALiBi, soft-capping or statistics on a fused-capable device.

    >>> decode_supported(torch.zeros(1, 2, 1, 4), None, None, None)
    True
    """
    return q.shape[2] == 1 and alibi is None and softcap is None and stats is None and (
        q.device.type in ("cpu", "cuda")
    )


def decode_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, *, scaling: float,
                  q_pos: torch.Tensor, k_pos: torch.Tensor, rope: RotaryOps | None = None,
                  n_far: int) -> torch.Tensor:
    """Attention of one query row (B, H, 1, D) over keys (B, Hkv, Nk, D) at ascending positions
    `k_pos`; `n_far` leading keys may be attended as far keys. Returns (B, 1, H, Dv)."""
    B, H, _, D = q.shape
    hkv = k.shape[1]
    g = H // hkv
    qp = q_pos[:1]
    first = 0 if plan.n_local is None else int(torch.searchsorted(k_pos, qp - plan.n_local + 1))
    last = int(torch.searchsorted(k_pos, qp, right=True))
    parts = [_piece(q, k[:, :, first:last], v[:, :, first:last], scaling)]  # window: (B,H,1,Dv), (B,H,1)
    fe = min(n_far, first)  # far keys lie before the window
    if fe > 0:
        if plan.cap and rope is not None and plan.slots:  # keys stay, the query at its cache slot
            qf = rope.move(q, qp, torch.clamp(qp, max=plan.limit)).float()
            kf = k[:, :, :fe].float()
        elif plan.cap and rope is not None:
            qf = rope.move(q, qp, plan.limit).float()
            kf = rope.move(k[:, :, :fe], k_pos[:fe], 0).float()
        else:
            qf, kf = q.float(), k[:, :, :fe].float()
        s = (qf.reshape(B, hkv, g, 1, D) @ kf[:, :, None].transpose(-1, -2)) * scaling  # (B,Hkv,g,1,fe)
        lse = torch.logsumexp(s, -1)
        o = torch.exp(s - lse[..., None]) @ v[:, :, None, :fe].float()  # (B,Hkv,g,1,Dv)
        parts.append((o.reshape(B, H, 1, -1), lse.reshape(B, H, 1)))
    out = _merge(parts) if len(parts) > 1 else parts[0][0]
    return out.transpose(1, 2).to(v.dtype).contiguous()
