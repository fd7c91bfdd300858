"""Fast path of the kernel for a prefill without statistics.

Rows i < n_local see only local keys: one causal fused call. Rows i >= n_local are cut into
blocks of R rows [a, b); their window splits into three pieces that fused attention handles
without a dense mask: the causal square [a, b), the fully visible middle [a - n_local + R, a), and
a small triangle [a - n_local + 1, a - n_local + R), where row a + r sees the keys from
a - n_local + 1 + r on: with rows and keys both reversed it is a causal square too, so every piece
runs through the causal or the unmasked kernel and no masked-out pair is computed. The far keys
(j < n_global, at the capped distance) are scored explicitly in fp32. All pieces are merged
exactly through their log-sum-exp, so the result is the softmax over the union.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .spec import Plan

if TYPE_CHECKING:
    from .rotary import RotaryOps

ROWS = 1024  # query rows per block


def fused_supported(q: torch.Tensor, nq: int, nk: int, q_pos: torch.Tensor, k_pos: torch.Tensor, plan: Plan | None = None) -> bool:
    """True for a prefill on a device with a fused kernel, with keys at positions 0..nk-1: either
    the whole sequence (queries 0..nk-1), or, for a windowed plan, a chunk of queries nk-nq..nk-1
    after a cache of at least n_local keys (a patched run continuing from a shared prefix); or a
    chunk after a bounded cache (`patch.cache`): keys at 0..G-1 (the plan's n_global) then one
    contiguous run ending at the last query and starting at least n_local before the first."""
    if nq < 2 or q.device.type not in ("cpu", "cuda"):
        return False
    last = int(q_pos[-1])
    if int(k_pos[-1]) != last or k_pos.shape[0] != nk or int(q_pos[0]) != last - nq + 1:
        return False
    shift = last + 1 - nk  # positions missing between the global keys and the local run
    if shift == 0:
        if int(k_pos[0]) != 0:
            return False
        return nq == nk or (plan is not None and plan.n_local is not None and nk - nq >= plan.n_local)
    if plan is None or plan.n_local is None or plan.n_global is None or shift < 0:
        return False
    g = plan.n_global
    if g >= nk or int(k_pos[g]) - g != shift or int(k_pos[g]) > last - nq + 1 - plan.n_local + 1:
        return False
    steps = k_pos[1:] - k_pos[:-1]  # ascending by 1 everywhere but at the one gap after the globals
    return (g == 0 or int(k_pos[g - 1]) == g - 1) and int((steps != 1).sum()) == (1 if g else 0)


def _piece(q, k, v, scaling, causal=False):
    """Fused attention of one piece, unmasked or causal (a square: row r sees keys 0..r);
    (out (B,H,nb,Dv) fp32, lse (B,H,nb) fp32). Handles GQA."""
    g = q.shape[1] // k.shape[1]
    if q.device.type == "cpu" and q.shape[-1] == v.shape[-1]:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, scale=scaling
        )
        return out.float(), lse.float()
    if q.device.type == "cuda":
        try:  # memory-efficient attention returns the log-sum-exp; it wants equal head counts
            kk, vv = (k, v) if g == 1 else (k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, kk, vv, None, True, 0.0, causal, scale=scaling
            )[:2]
            return out.float(), lse[..., : q.shape[2]].float()
        except (RuntimeError, NotImplementedError):
            pass
    kk, vv = k.float().repeat_interleave(g, 1), v.float().repeat_interleave(g, 1)
    s = (q.float() @ kk.transpose(-1, -2)) * scaling
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    return torch.exp(s - lse[..., None]) @ vv, lse


def _triangle(q, k, v, scaling):
    """Rows r = 0..R-1 of q (B, H, R, D) against keys m = 0..R-2 of k, v (B, Hkv, R-1, D), row r
    seeing the keys m >= r (the last row none); (out, lse) as `_piece`, lse -inf where no key is
    seen. Reversing rows and keys (r' = R-2-r, m' = R-2-m) turns it into the causal square m' <= r'.
    """
    out, lse = _piece(q[:, :, :-1].flip(2), k.flip(2), v.flip(2), scaling, causal=True)
    out = torch.cat([out.flip(2), out.new_zeros(*out.shape[:2], 1, out.shape[-1])], 2)
    return out, torch.cat([lse.flip(2), lse.new_full((*lse.shape[:2], 1), float("-inf"))], 2)


def _merge(parts):
    """Combine (out, lse) pieces over disjoint key sets into the softmax over their union. The
    pieces' outputs are fresh tensors, zeroed in place where not finite: a piece's rows that see
    no key (lse -inf), or the 0 x NaN of a masked-out key whose value is NaN, add nothing; a NaN
    score makes its row's lse, and so the row, NaN."""
    w = torch.softmax(torch.stack([lse for _, lse in parts]), 0)[..., None]  # (P, B, H, nb, 1)
    out = parts[0][0].nan_to_num_() * w[0]
    for (o, _), wi in zip(parts[1:], w[1:], strict=True):
        out.addcmul_(o.nan_to_num_(), wi)
    return out


def fused_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, *, scaling: float,
                 q_pos: torch.Tensor, rope: RotaryOps | None = None) -> torch.Tensor:
    """Same function as `explicit_attend` for a prefill; (B, Nq, H, Dv). The queries are the last
    Nq of the Nk keys' positions (Nq = Nk, or a chunk after at least n_local cached keys, or a
    chunk after a bounded cache whose local keys sit `shift` index places below their positions:
    see `fused_supported`)."""
    B, H, nq, D = q.shape
    n = int(q_pos[-1]) + 1  # positions 0..n-1; keys past the globals are at index position - shift
    shift = n - k.shape[2]

    def local(x: int, y: int) -> tuple[torch.Tensor, torch.Tensor]:  # keys at positions x..y-1
        return k[:, :, x - shift : y - shift], v[:, :, x - shift : y - shift]

    off = n - nq  # position of the first query (0, or >= n_local: see `fused_supported`)
    hkv = k.shape[1]
    g = H // hkv
    w = plan.n_local
    if w is None or n <= w:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=g > 1)
        return out.transpose(1, 2).contiguous()
    out = torch.empty(B, nq, H, v.shape[-1], dtype=v.dtype, device=q.device)
    if off == 0:
        out[:, :w] = F.scaled_dot_product_attention(
            q[:, :, :w], k[:, :, :w], v[:, :, :w], is_causal=True, scale=scaling, enable_gqa=g > 1
        ).transpose(1, 2)
    rows = min(ROWS, w)
    n_far = 0 if plan.n_global == 0 else (n - w if plan.n_global is None else min(plan.n_global, n - w))
    capped = n_far and plan.cap and rope is not None
    k_far = k[:, :, :n_far].float()
    if capped and not plan.slots:  # slots: far keys stay, each query moves to min(i, limit)
        # q_cap . k_raw with q_cap = R(limit) q_raw equals q_raw . R(-limit) k_raw: move the few
        # far keys to position -limit once, and only undo each query block's own rotation
        k_far = rope.move(k[:, :, :n_far], torch.arange(n_far, device=q.device), -plan.limit)
    k_far = k_far.reshape(B, hkv, 1, n_far, D)
    v_far = v[:, :, None, :n_far].float()
    for a in range(max(w, off), n, rows):
        b = min(n, a + rows)
        nb, lo = b - a, a - w + 1
        qb = q[:, :, a - off : b - off]
        # the square [a, b), the middle [lo + nb - 1, a) every row sees, the triangle [lo, lo + nb - 1)
        parts = [_piece(qb, *local(a, b), scaling, causal=True)]
        if w > nb:
            parts.append(_piece(qb, *local(lo + nb - 1, a), scaling))
        if nb > 1:
            parts.append(_triangle(qb, *local(lo, lo + nb - 1), scaling))
        fe = min(n_far, b - w)
        if fe > 0:
            qf = qb.float()
            if capped:
                qp = q_pos[a - off : b - off]
                qf = rope.move(qb, qp, torch.clamp(qp, max=plan.limit) if plan.slots else 0)
            s = (qf.reshape(B, hkv, g, nb, D) @ k_far[..., :fe, :].transpose(-1, -2)).reshape(B, H, nb, fe)
            i = torch.arange(a, b, device=q.device)[:, None]
            s = (s * scaling).masked_fill(i - torch.arange(fe, device=q.device)[None, :] < w, float("-inf"))
            lse = torch.logsumexp(s, -1)
            p = torch.exp(s - lse[..., None]).reshape(B, hkv, g, nb, fe)
            parts.append(((p @ v_far[..., :fe, :]).reshape(B, H, nb, -1), lse))
        out[:, a - off : b - off] = _merge(parts).transpose(1, 2).to(v.dtype)
    return out
