"""An independent dense reference of LM-Infinite attention, written for the tests only.

It does not call the project's kernel: it undoes the model's rotation with its own float64 RoPE
formula, builds the full score matrix at the true distances and at the capped distance, picks per
(query, key) pair which one applies, and takes a float64 softmax. Registered as the attention
implementation "lminf_test_reference".

Optional top-k middle tokens (`configure(..., top_k=K, top_k_from=L, top_k_distance=T)`): in
layers with index >= L, the last query row of each forward also gets, per query head, the K
highest of its "middle" scores (keys beyond the window that are not far keys), each scored with
the raw query rotated to position T against the raw key (position 0) -- or with bias -slope * T
for ALiBi -- and those scores replace the masked ones before the softmax.
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
    if not sw and mode not in (None, "cap_only") and STATE.get("top_k") and module.layer_idx >= STATE["top_k_from"]:
        inv_freq, rd, inter = STATE["rope"](module)
        s_mid = s_true[..., -1:, :]
        if inv_freq is not None:
            q_raw = _rot(q[..., -1:, :], qpos[-1:], inv_freq, rd, inter, inverse=True)
            k_raw = _rot(k, kpos, inv_freq, rd, inter, inverse=True)
            s_mid = _rot(q_raw, torch.tensor([STATE["top_k_distance"]]), inv_freq, rd, inter) @ k_raw.transpose(-1, -2)
        s_mid = s_mid * scale
        if cap:
            s_mid = torch.tanh(s_mid / cap) * cap
        middle = (d[-1:] >= STATE["n_local"]) & ~far[-1:]
        s[..., -1:, :] = top_k_last_row(s[..., -1:, :], s_mid, middle, STATE["top_k"])
    p = torch.softmax(s, -1)
    if STATE.get("record") is not None:
        STATE["record"].append((s[0], p[0]))  # (H, N, N) float64 scores and probabilities, batch 1
    return (p @ v).transpose(1, 2).contiguous().to(query.dtype), None


AttentionInterface.register("lminf_test_reference", reference_attention)


def top_k_last_row(s_last, s_mid, middle, top_k):
    """s_last (..., 1, N) masked scores of the last row; s_mid (..., 1, N) its scores at the top-k
    distance; middle (1, N) bool. Returns s_last with, per head, the top_k best middle scores put in."""
    out = s_last.clone()
    idx = torch.nonzero(middle[0]).flatten()
    if idx.numel() == 0:
        return out
    flat_mid, flat_out = s_mid.reshape(-1, s_mid.shape[-1]), out.reshape(-1, out.shape[-1])
    for row in range(flat_mid.shape[0]):  # one row per (batch, head)
        cand = flat_mid[row, idx]
        best = idx[torch.argsort(cand, descending=True)[:top_k]]
        flat_out[row, best] = flat_mid[row, best]
    return flat_out.reshape(out.shape)


def configure(mode=None, n_local=None, n_global=None, limit=None, rope=None, record=None, top_k=0, top_k_from=0,
              top_k_distance=None):
    STATE.clear()
    STATE.update(mode=mode, n_local=n_local, n_global=n_global, limit=limit, rope=rope, record=record, top_k=top_k,
                 top_k_from=top_k_from, top_k_distance=top_k_distance)


def alibi_reference(q, k, v, slopes, scale, mode, n_local, n_global, limit, top_k=0, top_k_distance=None):
    """Dense float64 ALiBi reference: q,k,v (B,H,N,D), slopes (H,). Returns (B,N,H,D).

    top_k > 0: the last row also gets its top_k best middle keys per head, at distance top_k_distance."""
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
    if top_k and mode not in (None, "cap_only"):
        s_mid = q[..., -1:, :] @ k.transpose(-1, -2) * scale - slopes.double()[None, :, None, None] * top_k_distance
        middle = (d[-1:] >= n_local) & ~far[-1:]
        s[..., -1:, :] = top_k_last_row(s[..., -1:, :], s_mid, middle, top_k)
    return (torch.softmax(s, -1) @ v).transpose(1, 2)


def streaming_slots(i: int, n_global: int, n_local: int) -> list[int]:
    """Token indices a StreamingLLM cache holds when token i is the current one: every token while
    they fit in n_global + n_local, then the n_global first (sinks) and the n_local most recent."""
    if i + 1 <= n_global + n_local:
        return list(range(i + 1))
    return list(range(n_global)) + list(range(i - n_local + 1, i + 1))


def streaming_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """Naive StreamingLLM (registered as "lminf_test_streaming"): for each query row, the cache it
    would hold, positions assigned by slot (0..len-1), q and k rotated to those slot positions
    in float64 from their raw (un-rotated) values, one dense softmax per row. Plain prefill only."""
    q, k, v = query.double(), key.double(), value.double()
    B, H, N, D = q.shape
    g = H // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    n_global, n_local = STATE["n_global"], STATE["n_local"]
    inv_freq, rd, inter = STATE["rope"](module)
    pos = torch.arange(N)
    q_raw, k_raw = _rot(q, pos, inv_freq, rd, inter, inverse=True), _rot(k, pos, inv_freq, rd, inter, inverse=True)
    scale = scaling if scaling is not None else 1 / math.sqrt(D)
    out = torch.empty(B, H, N, v.shape[-1], dtype=torch.float64)
    for i in range(N):
        slots = torch.tensor(streaming_slots(i, n_global, n_local))
        slot_pos = torch.arange(len(slots))
        qi = _rot(q_raw[:, :, i : i + 1], slot_pos[-1:], inv_freq, rd, inter)
        ks = _rot(k_raw[:, :, slots], slot_pos, inv_freq, rd, inter)
        p = torch.softmax(qi @ ks.transpose(-1, -2) * scale, -1)
        out[:, :, i : i + 1] = p @ v[:, :, slots]
    return out.transpose(1, 2).contiguous().to(query.dtype), None


AttentionInterface.register("lminf_test_streaming", streaming_attention)


def streaming_alibi_reference(q, k, v, slopes, scale, n_global, n_local):
    """Naive StreamingLLM with ALiBi: q, k, v (B, H, N, D); each row's bias -slope * (slot distance)
    over the cache it would hold. Returns (B, N, H, D) float64."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, N, D = q.shape
    out = torch.empty(B, H, N, v.shape[-1], dtype=torch.float64)
    for i in range(N):
        slots = torch.tensor(streaming_slots(i, n_global, n_local))
        dist = (len(slots) - 1 - torch.arange(len(slots))).double()  # slot distance to the query
        s = q[:, :, i : i + 1] @ k[:, :, slots].transpose(-1, -2) * scale
        s = s - slopes.double()[None, :, None, None] * dist
        out[:, :, i : i + 1] = torch.softmax(s, -1) @ v[:, :, slots]
    return out.transpose(1, 2)
