"""An independent dense reference of LM-Infinite attention, written for the tests only.

It does not call the project's kernel: it undoes the model's rotation with its own float64 RoPE
formula, builds the full score matrix at the true distances and at the capped distance, picks per
(query, key) pair which one applies, and takes a float64 softmax. Registered as the attention
implementation "lminf_test_reference".
"""

from __future__ import annotations

import math

import torch
from transformers import AttentionInterface

STATE: dict = {}  # mode settings and per-module rotary info, set by `configure`


def _rot(x, pos, inv_freq, rd, interleaved, inverse=False):
    ang = pos.double()[:, None] * inv_freq.double()[None, :]  # (N, rd/2)
    if interleaved:
        c, s = ang.cos().repeat_interleave(2, -1), ang.sin().repeat_interleave(2, -1)
        xr = x[..., :rd]
        rot = torch.stack((-xr[..., 1::2], xr[..., ::2]), -1).flatten(-2)
    else:
        c, s = torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)
        xr = x[..., :rd]
        h = rd // 2
        rot = torch.cat((-xr[..., h:], xr[..., :h]), -1)
    y = xr * c - rot * s if inverse else xr * c + rot * s
    return torch.cat((y, x[..., rd:]), -1)


def reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    q, k, v = query.double(), key.double(), value.double()
    B, H, N, D = q.shape
    g = H // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    nk = k.shape[2]
    kpos = torch.arange(nk)
    qpos = kpos[nk - N :]
    mode = STATE.get("mode")
    d = qpos[:, None] - kpos[None, :]
    s_true = q @ k.transpose(-1, -2)
    local = d >= 0
    far = torch.zeros_like(local)
    s_far = s_true
    sw = kw.get("sliding_window")
    if sw:
        local = (d >= 0) & (d < sw)
    elif mode is not None:
        n_local, n_global, limit = STATE["n_local"], STATE["n_global"], STATE["limit"]
        local = (d >= 0) & (d < n_local)
        if mode != "window":
            glob = torch.ones(nk, dtype=torch.bool) if mode == "cap_only" else kpos < n_global
            far = (d >= n_local) & glob[None, :]
        if mode in ("lambda", "cap_only"):
            inv_freq, rd, inter = STATE["rope"](module)
            if inv_freq is not None:
                q_raw = _rot(q, qpos, inv_freq, rd, inter, inverse=True)
                k_raw = _rot(k, kpos, inv_freq, rd, inter, inverse=True)
                q_cap = _rot(q_raw, torch.full((N,), limit), inv_freq, rd, inter)
                s_far = q_cap @ k_raw.transpose(-1, -2)
    scale = scaling if scaling is not None else 1 / math.sqrt(D)
    s = torch.where(far, s_far, s_true) * scale
    cap = kw.get("softcap")
    if cap:
        s = torch.tanh(s / cap) * cap
    s = s.masked_fill(~(local | far), float("-inf"))
    p = torch.softmax(s, -1)
    if STATE.get("record") is not None:
        STATE["record"].append((s[0], p[0]))  # (H, N, N) float64 scores and probabilities, batch 1
    return (p @ v).transpose(1, 2).contiguous().to(query.dtype), None


AttentionInterface.register("lminf_test_reference", reference_attention)


def configure(mode=None, n_local=None, n_global=None, limit=None, rope=None, record=None):
    STATE.clear()
    STATE.update(mode=mode, n_local=n_local, n_global=n_global, limit=limit, rope=rope, record=record)


def alibi_reference(q, k, v, slopes, scale, mode, n_local, n_global, limit):
    """Dense float64 ALiBi reference: q,k,v (B,H,N,D), slopes (H,). Returns (B,N,H,D)."""
    q, k, v = q.double(), k.double(), v.double()
    N = q.shape[2]
    pos = torch.arange(N)
    d = pos[:, None] - pos[None, :]
    local = d >= 0
    far = torch.zeros_like(local)
    dist = d.double()
    if mode is not None:
        local = (d >= 0) & (d < n_local)
        if mode != "window":
            glob = torch.ones(N, dtype=torch.bool) if mode == "cap_only" else pos < n_global
            far = (d >= n_local) & glob[None, :]
        if mode in ("lambda", "cap_only"):
            dist = torch.where(far, torch.full_like(dist, float(limit)), dist)
    s = q @ k.transpose(-1, -2) * scale - slopes.double()[None, :, None, None] * dist
    s = s.masked_fill(~(local | far), float("-inf"))
    return (torch.softmax(s, -1) @ v).transpose(1, 2)
