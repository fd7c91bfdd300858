"""Explicit path of the kernel: block by block over query rows, fp32 scores, optional statistics.

Used whenever statistics are requested, and for cached chunks, ALiBi and logit soft-capping.
For each block of query rows [a, b) the keys a row can see are laid out as columns:

    columns [0, fe)   far keys k_pos[:fe] (n_global of them at most), at the capped distance
    columns [fe, K)   the local key range k_pos[first:last] spanned by the block's windows

Row r attends the far columns [0, far_r) and the local columns [fe + lo_r, fe + hi_r); every
other score is set to MASKED. Only the column ranges where some row is masked are touched
(for causal attention: the small triangle at the block's diagonal), the softmax is one fused
pass into a reused buffer, and the output is one matmul per piece. The statistics
(`stats.reduce_block`) read the same scores and probabilities.

Memory is O(rows_per_block x keys-per-row) per head: nothing n x n is ever allocated except for
plain causal attention, where a block is rows x keys.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .native import rowstats
from .spec import Plan
from .stats import StatsRequest, local_counts, reduce_block

if TYPE_CHECKING:
    from .rotary import RotaryOps

BLOCK_ELEMENTS = 1 << 22  # fp32 score elements per block (16 MB); 4 MB blocks made the matmuls
# slower and 64 MB blocks the elementwise passes (measured on 2 CPU cores)
MAX_WORKERS = 4  # CPU: blocks run on up to this many threads, one intra-op thread each
MASKED = -1e30  # score of a pair not attended: exp() gives exactly 0, and 0 * MASKED stays finite


@dataclass
class Columns:
    """The key columns of one block and which of them each row attends (see the module doc)."""

    q_pos: torch.Tensor  # (nb,) query positions
    first: int  # loc_pos = k_pos[first:first + Kl]
    far_pos: torch.Tensor  # (fe,) positions of the far keys
    loc_pos: torch.Tensor  # (Kl,) positions of the local keys, ascending
    far_hi: torch.Tensor  # (nb,) row r attends far columns [0, far_hi[r])
    lo: torch.Tensor  # (nb,) row r attends local columns [lo[r], hi[r]) (offsets into loc_pos)
    hi: torch.Tensor  # (nb,)

    @property
    def fe(self) -> int:
        return self.far_pos.shape[0]

    def attended(self, c0: int, c1: int) -> torch.Tensor:
        """(nb, c1 - c0) bool: which rows attend block columns c0..c1-1."""
        col = torch.arange(c0, c1, device=self.q_pos.device)[None, :]
        fe = self.fe
        return (col < self.far_hi[:, None]) | ((col >= fe + self.lo[:, None]) & (col < fe + self.hi[:, None]))

    def distances(self) -> torch.Tensor:
        """(nb, K) true distance q_pos - k_pos of every block column."""
        return self.q_pos[:, None] - torch.cat((self.far_pos, self.loc_pos))[None, :]


def far_query_position(plan: Plan, q_pos: torch.Tensor) -> torch.Tensor | int:
    """Where a capped plan moves the queries to score far keys: `limit`, or with `plan.slots` each
    query's cache-slot position min(q_pos, limit) (the far keys then stay where they are).

    >>> far_query_position(Plan(4, 2, True, 5, slots=True), torch.tensor([3, 5, 9])).tolist()
    [3, 5, 5]
    """
    return torch.clamp(q_pos, max=plan.limit) if plan.slots else plan.limit


def far_distance(plan: Plan, q_pos: torch.Tensor, far_pos: torch.Tensor) -> torch.Tensor | int:
    """(nq, fe) distances at which a capped plan shows far keys (ALiBi bias), or the scalar `limit`.

    >>> far_distance(Plan(4, 2, True, 5, slots=True), torch.tensor([9]), torch.tensor([0, 1])).tolist()
    [[5, 4]]
    """
    if not plan.slots:
        return plan.limit
    return far_query_position(plan, q_pos)[:, None] - far_pos[None, :]


def far_keys(plan: Plan, k_pos: torch.Tensor) -> int:
    """Number of leading keys that may be attended as far (global) keys."""
    if plan.n_local is None or plan.n_global == 0:
        return 0
    if plan.n_global is None:
        return k_pos.shape[0]
    return int(torch.searchsorted(k_pos, plan.n_global))


class _Buffers:
    """Flat fp32 buffers reused by every block of a call (fresh 4-16 MB tensors per block
    cost page faults that showed up as a third of the time). When autograd records the call,
    `get` returns None and the ops allocate their results (out= ops are not differentiable)."""

    def __init__(self, device, enabled: bool = True):
        self.device, self.enabled = device, enabled
        self.bufs = [torch.empty(0, device=device) for _ in range(3)]

    def reserve(self, elements: int, count: int) -> _Buffers:
        for i in range(count):
            if self.bufs[i].numel() < elements:
                self.bufs[i] = torch.empty(elements, device=self.device)
        return self

    def get(self, i: int, *shape: int) -> torch.Tensor | None:
        """A view of buffer i (reserved large enough by `reserve`), or None when disabled."""
        return self.bufs[i][: math.prod(shape)].view(*shape) if self.enabled else None


def explicit_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, *, scaling: float,
                    q_pos: torch.Tensor, k_pos: torch.Tensor, rope: RotaryOps | None = None,
                    alibi: torch.Tensor | None = None, softcap: float | None = None,
                    stats: StatsRequest | None = None, need_output: bool = True) -> torch.Tensor:
    """Attention output (B, Nq, H, Dv) in v's dtype; see `kernel.attend` for the arguments.
    With need_output=False only the statistics are computed (the output stays uninitialised)."""
    B, H, nq, D = q.shape
    hkv, nk, dv = k.shape[1], k.shape[2], v.shape[-1]
    g, G = H // hkv, B * hkv
    dev = q.device
    out = torch.empty(B, nq, H, dv, dtype=v.dtype, device=dev)
    qg = q.reshape(B, hkv, g, nq, D)
    kT = k.float().transpose(-1, -2).contiguous().view(G, D, nk)  # column slices stay BLAS-friendly
    vf = v.float().reshape(G, nk, dv)
    n_far = far_keys(plan, k_pos)
    kfT = kT[..., :n_far]
    capped = plan.cap and rope is not None and n_far > 0
    if capped and not plan.slots:  # slots: far keys stay at their own positions
        kfT = rope.move(k[:, :, :n_far], k_pos[:n_far], 0).float().transpose(-1, -2).reshape(G, D, n_far)
    neg_slopes = -alibi.float().to(dev).view(1, H, 1, 1) if alibi is not None else None
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    rows = rows_per_block(plan, q_pos, nk, n_far, B * H)
    blocks = [(a, _columns(plan, q_pos[a : a + rows], k_pos, n_far)) for a in range(0, nq, rows)]
    workers = _workers(dev, grad, len(blocks))
    intra = max(1, torch.get_num_threads() // workers)
    local = threading.local()
    native = rowstats() if stats is not None and dev.type == "cpu" and not grad else None
    count = 3 if stats is not None and native is None else 2
    largest = max(c.q_pos.shape[0] * (c.fe + c.loc_pos.shape[0]) for _, c in blocks)  # rows x columns
    spare = _workspace(dev, workers, largest * B * H, count, not grad)
    edges = torch.as_tensor(stats.dist_edges, device=dev) if stats is not None else None

    def block(item: tuple[int, Columns]) -> None:
        a, cols = item
        bufs = getattr(local, "bufs", None)
        if bufs is None:
            if workers > 1:
                torch.set_num_threads(intra)  # per thread: the caller's setting is unchanged
            bufs = local.bufs = spare.pop()
        nb = cols.q_pos.shape[0]
        b = a + nb
        first, fe, kl = cols.first, cols.fe, cols.loc_pos.shape[0]
        K = fe + kl
        qb = (qg[:, :, :, a:b].float() * scaling).reshape(G, g * nb, D)
        s = bufs.get(0, G, g * nb, K)  # (G, g*nb, K) scores
        loc = _bmm(qb, kT[..., first : first + kl], bufs.get(1, G, g * nb, kl) if fe else s)
        if fe:
            qf = qb
            if capped:
                qf = (rope.move(q[:, :, a:b], q_pos[a:b], far_query_position(plan, q_pos[a:b])).float()
                      * scaling).reshape(G, g * nb, D)
            far = torch.bmm(qf, kfT[..., :fe])
            s = torch.cat((far, loc), -1) if s is None else torch.cat((far, loc), -1, out=s)
        else:
            s = loc
        if softcap:
            s.div_(softcap).tanh_().mul_(softcap)
        s4 = s.view(B, H, nb, K)
        if neg_slopes is not None:
            d = cols.distances().float()
            if plan.cap and fe:
                d[:, :fe] = far_distance(plan, cols.q_pos, cols.far_pos)
            s4.addcmul_(neg_slopes, d)  # bias -slope * distance
        _mask(s4, cols)
        p = bufs.get(1, G, g * nb, K)
        fused = None
        if native is not None and kl:
            fused = _native_softmax_stats(native, s, p, cols, edges, (B, H, nb))
        elif p is None:
            p = torch.softmax(s, -1)
        else:
            torch.ops.aten._softmax.out(s, -1, False, out=p)  # one fused pass (max, exp, sum, scale)
        if need_output:
            o = torch.bmm(p[..., fe:], vf[:, first : first + kl])  # (G, g*nb, Dv)
            if fe:
                o += torch.bmm(p[..., :fe], vf[:, :fe])
            out[:, a:b] = o.view(B, H, nb, dv).transpose(1, 2).to(v.dtype)
        if stats is not None:
            with torch.no_grad():
                scratch = bufs.get(2, B, H, nb, K) if fused is None else None
                res = reduce_block(s4, p.view(B, H, nb, K), cols, stats, scratch=scratch, fused=fused)
                stats.sink(slice(a, b), res)

    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="lminf-block") as pool:
            list(pool.map(block, blocks))
    else:
        for item in blocks:
            block(item)
    return out


_WORKSPACE: dict = {}  # (calling thread, device) -> [_Buffers per worker], reused across calls


def _workspace(dev, workers: int, elements: int, count: int, enabled: bool) -> list:
    """Buffers for the workers of one call, allocated in the calling thread at their final size
    and kept for the next call (per-layer allocation and release of these 16-48 MB blocks, some
    of them inside worker threads' malloc arenas, raised the peak RSS of a forward by 30-50%).
    `release_workspace` frees them; the router calls it when a model stops being routed."""
    if not enabled:
        return [_Buffers(dev, False) for _ in range(workers)]
    ws = _WORKSPACE.setdefault((threading.get_ident(), str(dev)), [])
    ws.extend(_Buffers(dev) for _ in range(workers - len(ws)))
    return [b.reserve(elements, count) for b in ws[:workers]]


def release_workspace() -> None:
    """Free the buffers kept between calls (a call in progress keeps its own until it ends)."""
    _WORKSPACE.clear()


def _native_softmax_stats(native, s, p, cols: Columns, edges: torch.Tensor, lead: tuple) -> dict:
    """Softmax of the block into p plus max, lse, entropy and the local prefix sums at the distance
    edges, in one compiled pass per row (see `native/rowstats.cpp`)."""
    K = s.shape[-1]
    fe, n_rows = cols.fe, lead[0] * lead[1] * lead[2]
    cnt = local_counts(cols, edges) + fe  # (nb, edges) block columns at distance >= each edge
    cuts = torch.cat((cnt, torch.full_like(cnt[:, :1], fe)), 1).contiguous()  # + the far/local border
    top, lse, ent = (torch.empty(n_rows, device=s.device) for _ in range(3))
    pref = torch.empty(n_rows, cuts.shape[1], device=s.device)
    native.softmax_stats(s.view(n_rows, K), p.view(n_rows, K), cuts, top, lse, ent, pref)
    pref = pref.view(*lead, -1)
    return {"top": top.view(lead), "lse": lse.view(lead), "entropy": ent.view(lead),
            "ge": pref[..., :-1] - pref[..., -1:]}


def _workers(dev: torch.device, grad: bool, blocks: int) -> int:
    """Threads for the blocks of one call. On CPU, blocks run side by side with one intra-op
    thread each: every op of a block then stays on one core and its cache, with no fork/join
    per op (about 1.15x faster than one block at a time on all cores, measured on 2 cores).
    One thread on GPUs and when autograd records the call."""
    if dev.type != "cpu" or grad:
        return 1
    return max(1, min(MAX_WORKERS, torch.get_num_threads(), blocks))


def _bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)


def _columns(plan: Plan, qp: torch.Tensor, k_pos: torch.Tensor, n_far: int) -> Columns:
    """Key columns of the block of query rows at positions qp (see the module doc)."""
    w = plan.n_local
    first = 0 if w is None else int(torch.searchsorted(k_pos, qp[0] - w + 1))
    last = int(torch.searchsorted(k_pos, qp[-1], right=True))
    loc = k_pos[first:last]
    hi = torch.searchsorted(loc, qp, right=True)
    if w is None:
        lo, fe = torch.zeros_like(hi), 0
    else:
        lo = torch.searchsorted(loc, qp - w + 1)
        fe = min(n_far, int(torch.searchsorted(k_pos, qp[-1] - w + 1)))  # far keys some row attends
    far = k_pos[:fe]
    far_hi = torch.searchsorted(far, qp - w, right=True) if fe else torch.zeros_like(hi)
    return Columns(qp, first, far, loc, far_hi, lo, hi)


def _mask(s4: torch.Tensor, cols: Columns) -> None:
    """Set the scores of pairs not attended to MASKED, touching only the columns where some row
    is masked: the far columns, the left edge of the window and the causal diagonal."""
    fe, K = cols.fe, s4.shape[-1]
    regions = [(0, fe), (fe, fe + int(cols.lo.max())), (fe + int(cols.hi.min()), K)]
    for c0, c1 in regions:
        if c1 > c0:
            s4[..., c0:c1].masked_fill_(~cols.attended(c0, c1), MASKED)


def rows_per_block(plan: Plan, q_pos: torch.Tensor, nk: int, n_far: int, bh: int) -> int:
    """Query rows per block: scores of rows x keys-in-range stay under BLOCK_ELEMENTS, and for
    sparse (strided) rows the key range a block spans wastes at most about a quarter."""
    nq = q_pos.shape[0]
    if plan.n_local is None:
        return max(1, min(nq, BLOCK_ELEMENTS // max(1, bh * nk)))
    step = max(1.0, float(q_pos[-1] - q_pos[0]) / max(1, nq - 1))
    by_waste = max(1, int(plan.n_local / (4 * step)))
    by_memory = BLOCK_ELEMENTS // max(1, bh * (int(1.25 * plan.n_local) + n_far))
    return max(1, min(nq, by_waste, by_memory))
