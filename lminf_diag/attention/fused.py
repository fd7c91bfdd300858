"""Fast path of the kernel for a prefill without statistics.

Rows i < n_local see only local keys: one causal fused call. Rows i >= n_local are cut into
blocks; each block's window is a band of keys [a - n_local + 1, b) with the same band mask for
every block, run through the backend's fused attention that also returns the log-sum-exp. The
few far keys (j < n_global, at the capped distance) are scored explicitly in fp32 and merged
with the band through the log-sum-exp, so the result is the softmax over the union exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .spec import Plan

ROWS = 1024  # query rows per band block


def fused_supported(q, nq: int, nk: int, q_pos: torch.Tensor, k_pos: torch.Tensor) -> bool:
    """True for a cache-free prefill with positions 0..n-1 on a device with a fused kernel."""
    if nq != nk or nq < 2 or q.device.type not in ("cpu", "cuda"):
        return False
    return int(q_pos[0]) == 0 and int(q_pos[-1]) == nq - 1 and int(k_pos[-1]) == nk - 1


def _band_attention(q, k, v, bias, scaling):
    """Fused attention with an additive bias (nb, K); returns (out (B,H,nb,Dv), lse (B,H,nb) fp32)."""
    if q.device.type == "cpu" and q.shape[-1] == v.shape[-1]:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=bias.to(q.dtype), scale=scaling
        )
        return out, lse.float()
    try:  # CUDA: memory-efficient attention takes a bias and returns the log-sum-exp
        if q.device.type != "cuda":
            raise NotImplementedError
        b, h, nb, _ = q.shape
        full = bias.to(q.dtype).expand(b, h, nb, k.shape[2])
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, full, True, 0.0, False, scale=scaling
        )[:2]
        return out, lse[..., :nb].float()
    except (RuntimeError, NotImplementedError):
        s = (q.float() @ k.float().transpose(-1, -2)) * scaling + bias
        lse = torch.logsumexp(s, -1)
        return (torch.exp(s - lse[..., None]) @ v.float()).to(v.dtype), lse


def _expand(x: torch.Tensor, g: int) -> torch.Tensor:
    return x if g == 1 else x.repeat_interleave(g, dim=1)


def fused_attend(q, k, v, plan: Plan, scaling: float, rope, q_pos) -> torch.Tensor:
    """Same function as `explicit_attend` for a prefill; (B, N, H, Dv)."""
    B, H, n, D = q.shape
    g = H // k.shape[1]
    w = plan.n_local
    if w is None or n <= w:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=g > 1)
        return out.transpose(1, 2).contiguous()
    out = torch.empty(B, H, n, v.shape[-1], dtype=v.dtype, device=q.device)
    out[:, :, :w] = F.scaled_dot_product_attention(
        q[:, :, :w], k[:, :, :w], v[:, :, :w], is_causal=True, scale=scaling, enable_gqa=g > 1
    )
    qq = torch.arange(ROWS, device=q.device)[:, None]
    m = torch.arange(ROWS + w - 1, device=q.device)[None, :]
    band = torch.zeros(ROWS, ROWS + w - 1, device=q.device)
    band.masked_fill_(~((m >= qq) & (m <= qq + w - 1)), float("-inf"))  # i - j in [0, w)
    n_far = 0 if plan.n_global == 0 else (n - w if plan.n_global is None else min(plan.n_global, n - w))
    k_far = k[:, :, :n_far].float()
    if n_far and plan.cap and rope is not None:
        k_far = rope.move(k[:, :, :n_far], q_pos[:n_far], 0)
    k_far = k_far.reshape(B, k.shape[1], 1, n_far, D)
    v_far = v[:, :, None, :n_far].float()
    for a in range(w, n, ROWS):
        b = min(n, a + ROWS)
        nb, ks = b - a, a - w + 1
        o, lse = _band_attention(
            q[:, :, a:b], _expand(k[:, :, ks:b], g), _expand(v[:, :, ks:b], g), band[:nb, : nb + w - 1], scaling
        )
        fe = min(n_far, b - w)
        if fe > 0:
            qb = q[:, :, a:b]
            qb = rope.move(qb, q_pos[a:b], plan.limit) if plan.cap and rope is not None else qb.float()
            s = (qb.reshape(B, -1, g, nb, D) @ k_far[..., :fe, :].transpose(-1, -2)).reshape(B, H, nb, fe)
            s = s * scaling
            i = torch.arange(a, b, device=q.device)[:, None]
            j = torch.arange(fe, device=q.device)[None, :]
            s = s.masked_fill(i - j < w, float("-inf"))
            top = torch.maximum(lse, s.amax(-1))
            w_band = torch.exp(lse - top)
            e = torch.exp(s - top[..., None])  # (B, H, nb, fe)
            far = (e.reshape(B, -1, g, nb, fe) @ v_far[..., :fe, :]).reshape(B, H, nb, -1)
            o = (o.float() * w_band[..., None] + far) / (w_band + e.sum(-1))[..., None]
        out[:, :, a:b] = o.to(v.dtype)
    return out.transpose(1, 2).contiguous()
