"""Property tests: `attend` against a naive per-pair float64 reference written here.

The reference knows nothing of the kernel: for every query position i and key position j <= i it
decides, pair by pair, whether the key is local (i - j < n_local, seen at its true distance), far
(lambda / mask_only: j < n_global; cap_only: every j; window: none; seen at distance `limit` when
the mode caps, else at its true distance) or not attended. Rotary positions are applied here with
a float64 rotate-half formula to raw q and k; a capped far pair is scored as rotate(q_raw, limit)
. k_raw (the key at position 0). ALiBi adds -slope * distance (-slope * limit when capped).

Both kernel paths are exercised: the fused prefill path (default positions, no statistics) and
the explicit path (statistics requested, a row subset, n = 1, fewer queries than keys as with a
KV cache, and sparse key positions as left by a bounded cache). With statistics, entropy, max
logit, log-sum-exp, sink mass and distance mass are checked against the reference too.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lminf_diag.attention.kernel import attend
from lminf_diag.attention.rotary import RotaryOps
from lminf_diag.attention.spec import LambdaSpec, Plan
from lminf_diag.attention.stats import StatsRequest, log_edges

MODES = ("baseline", "lambda", "mask_only", "cap_only", "window")
PATHS = ("prefill", "stats", "stats_rows", "cache", "cache_sparse", "cache_bounded")
LOW = {"bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPES = {"float32": torch.float32, **LOW}
SINK_TOKENS = 2
COUNT = {"hypothesis": 0, "edge": 0}


@dataclass(frozen=True)
class Case:
    batch: int = 1
    kv_heads: int = 1
    group: int = 1  # query heads per kv head
    head_dim: int = 4
    n: int = 8  # positions 0..n-1 exist
    n_local: int = 3
    n_global: int = 1
    limit: int = 2
    mode: str = "lambda"
    dtype: str = "float32"
    positions: str = "rope"  # rope | alibi | none
    path: str = "prefill"
    n_q: int = 1  # queries for the cache paths (the last n_q key positions)
    softcap: float | None = None
    q_scale: float = 1.0
    seed: int = 0


@st.composite
def cases(draw) -> Case:
    n = draw(st.integers(1, 40))
    n_local = draw(st.integers(1, n + 2))
    path = draw(st.sampled_from(PATHS))
    positions = draw(st.sampled_from(("rope", "rope", "alibi", "none")))
    return Case(
        batch=draw(st.integers(1, 2)),
        kv_heads=draw(st.integers(1, 2)),
        group=draw(st.sampled_from((1, 2, 3))),
        head_dim=draw(st.sampled_from((4, 8))),
        n=n,
        n_local=n_local,
        n_global=draw(st.integers(0, n + 2)),
        limit=draw(st.integers(1, n_local + 2)),
        mode=draw(st.sampled_from(MODES)),
        dtype=draw(st.sampled_from(("float32", "float32", "bfloat16", "float16"))),
        positions=positions,
        path=path,
        n_q=draw(st.integers(1, n)),
        softcap=draw(st.sampled_from((None, None, 4.0))) if path != "prefill" else None,
        q_scale=draw(st.sampled_from((0.5, 1.0, 3.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


# ------------------------------------------------------------------------------------ reference


def rotate(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor, inverse: bool = False):
    """Rotate-half RoPE of x (..., N, D) float64 to positions pos (N,) (or back from them)."""
    ang = pos.double()[:, None] * inv_freq.double()[None, :]
    cos, sin = torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), -1)
    return x * cos - rot * sin if inverse else x * cos + rot * sin


def pair_kind(case: Case, i: int, j: int) -> str | None:
    """How query position i sees key position j: "local", "far", "far_capped" or None."""
    if j > i:
        return None
    if case.mode == "baseline":
        return "local"
    if i - j < case.n_local:
        return "local"
    if case.mode == "window":
        return None
    if case.mode in ("lambda", "mask_only") and j >= case.n_global:
        return None
    return "far_capped" if case.mode in ("lambda", "cap_only") else "far"


def reference(case, q_raw, k_raw, v, q_pos, k_pos, inv_freq, slopes, scaling):
    """(out (B, Nq, H, Dv), scores (B, H, Nq, Nk), probabilities) in float64, pair by pair."""
    B, H, nq, _ = q_raw.shape
    g = H // k_raw.shape[1]
    k_raw, v = k_raw.repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    if inv_freq is not None:
        q_true, k_true = rotate(q_raw, q_pos, inv_freq), rotate(k_raw, k_pos, inv_freq)
        q_cap = rotate(q_raw, torch.full((nq,), case.limit), inv_freq)
    else:
        q_true, k_true, q_cap = q_raw, k_raw, q_raw
    kinds = [[pair_kind(case, int(i), int(j)) for j in k_pos] for i in q_pos]
    attended = torch.tensor([[kd is not None for kd in row] for row in kinds])
    capped = torch.tensor([[kd == "far_capped" for kd in row] for row in kinds])
    dist = torch.where(capped, float(case.limit), (q_pos[:, None] - k_pos[None, :]).double())
    s = torch.where(capped, q_cap @ k_raw.transpose(-1, -2), q_true @ k_true.transpose(-1, -2)) * scaling
    if case.softcap:
        s = torch.tanh(s / case.softcap) * case.softcap
    if slopes is not None:
        s = s - slopes.double()[None, :, None, None] * dist
    s = s.masked_fill(~attended, float("-inf"))
    p = torch.softmax(s, -1)
    return (p @ v).transpose(1, 2), s, p


def reference_stats(s, p, q_pos, k_pos, edges):
    """Per-row statistics of the reference scores/probabilities, (B, H, Nq) and (B, H, Nq, bins)."""
    logp = torch.where(p > 0, torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    d = q_pos[:, None] - k_pos[None, :]
    bins = torch.stack(
        [(p * ((d >= lo) & (d < hi))).sum(-1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)], -1
    )
    return {
        "entropy": -(p * logp).sum(-1),
        "max_logit": s.amax(-1),
        "lse": torch.logsumexp(s, -1),
        "sink_mass": p[..., k_pos < SINK_TOKENS].sum(-1),
        "dist_mass": bins,
    }


# ------------------------------------------------------------------------------------ the check


def plan_of(case: Case) -> Plan:
    if case.mode == "baseline":
        return Plan()
    return LambdaSpec(n_global=case.n_global, n_local=case.n_local, limit=case.limit, mode=case.mode).plan()


def key_positions(case: Case, gen: torch.Generator) -> torch.Tensor:
    if case.path == "cache_bounded":  # what a bounded cache holds: the first n_global, then a window
        p0 = case.n - min(case.n_q, case.n)
        g = min(case.n_global, case.n)
        return torch.cat([torch.arange(g), torch.arange(max(g, p0 - case.n_local), case.n)])
    if case.path != "cache_sparse":
        return torch.arange(case.n)
    keep = torch.rand(case.n, generator=gen) < 0.6
    keep[case.n - case.n_q :] = True  # the queries' own positions stay (each query sees itself)
    return torch.arange(case.n)[keep]


def check(case: Case) -> None:
    gen = torch.Generator().manual_seed(case.seed)
    B, hkv, H, D = case.batch, case.kv_heads, case.kv_heads * case.group, case.head_dim
    dtype = DTYPES[case.dtype]
    k_pos = key_positions(case, gen)
    nk = k_pos.shape[0]
    nq = case.n_q if case.path.startswith("cache") else nk
    nq = min(nq, nk)
    q_pos = k_pos[nk - nq :]
    q_raw = torch.randn(B, H, nq, D, generator=gen, dtype=torch.float64) * case.q_scale
    k_raw = torch.randn(B, hkv, nk, D, generator=gen, dtype=torch.float64)
    v_in = torch.randn(B, hkv, nk, D, generator=gen, dtype=torch.float64).to(dtype)
    inv_freq = rope = slopes = None
    if case.positions == "rope":
        inv_freq = 1.0 / (10.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        rope = RotaryOps.from_inv_freq(inv_freq)
        q_in, k_in = rotate(q_raw, q_pos, inv_freq).to(dtype), rotate(k_raw, k_pos, inv_freq).to(dtype)
    else:
        q_in, k_in = q_raw.to(dtype), k_raw.to(dtype)
        if case.positions == "alibi":
            slopes = torch.rand(H, generator=gen, dtype=torch.float64) * 0.5 + 0.05
    if dtype != torch.float32:  # the reference reads the rounded inputs the kernel receives
        q_raw = q_in.double() if inv_freq is None else rotate(q_in.double(), q_pos, inv_freq, inverse=True)
        k_raw = k_in.double() if inv_freq is None else rotate(k_in.double(), k_pos, inv_freq, inverse=True)
    scaling = 1 / math.sqrt(D)

    want_stats = case.path.startswith("stats")
    rows = None
    if case.path == "stats_rows":
        rows = torch.unique(
            torch.cat((torch.randint(0, nq, (max(1, nq // 3),), generator=gen), torch.tensor([nq - 1])))
        )
    got: dict[str, np.ndarray] = {}
    edges = log_edges(case.n)

    def sink(sl: slice, res: dict) -> None:
        for name in ("entropy", "max_logit", "lse", "sink_mass", "dist_mass"):
            arr = res[name].double()
            n_rows = nq if rows is None else rows.shape[0]
            buf = got.setdefault(
                name, torch.full((B, H, n_rows, *arr.shape[3:]), float("nan"), dtype=torch.float64)
            )
            buf[:, :, sl] = arr

    stats = (
        StatsRequest(sink=sink, sink_tokens=SINK_TOKENS, dist_edges=edges, rows=rows) if want_stats else None
    )
    explicit_positions = case.path.startswith("cache") or case.n == 1
    out = attend(
        q_in,
        k_in,
        v_in,
        plan_of(case),
        scaling=scaling,
        q_pos=q_pos if explicit_positions else None,
        k_pos=k_pos if explicit_positions else None,
        rope=rope,
        alibi=None if slopes is None else slopes.float(),
        softcap=case.softcap,
        stats=stats,
    )
    ref, s, p = reference(case, q_raw, k_raw, v_in, q_pos, k_pos, inv_freq, slopes, scaling)

    assert out.shape == (B, nq, H, D) and out.dtype == dtype and out.is_contiguous()
    assert torch.isfinite(out).all(), f"non-finite output for {case}"
    diff = (out.double() - ref).abs().max().item()
    if dtype == torch.float32:
        assert diff <= 1e-5, f"max |out - ref| = {diff:.3g} for {case}"
    else:
        scale = v_in.double().abs().max().item()
        assert diff <= 2e-2 * scale, f"max |out - ref| = {diff:.3g} (value scale {scale:.3g}) for {case}"

    if want_stats:
        exp = reference_stats(s, p, q_pos, k_pos, edges)
        sel = slice(None) if rows is None else rows
        for name, val in exp.items():  # fp32 statistics from the same (rounded) inputs, all dtypes
            val = val[:, :, sel]
            assert not torch.isnan(got[name]).any(), f"{name}: rows left unwritten for {case}"
            err = (got[name] - val).abs().max().item()
            assert err <= 1e-4 * (1 + val.abs().max().item()), f"{name}: max error {err:.3g} for {case}"


# ------------------------------------------------------------------------------------ the tests


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_report(request):
    """Tiny tensors: one intra-op thread is several times faster (and steadier on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    line = f"test_kernel_property: {COUNT['hypothesis']} hypothesis cases, {COUNT['edge']} edge cases checked"
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capman is not None and reporter is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line("\n" + line)
    else:  # pragma: no cover
        print(line)


@settings(deadline=None, max_examples=400, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_attend_matches_pairwise_reference(case):
    check(case)
    COUNT["hypothesis"] += 1


def _edge_cases() -> list[Case]:
    out = []
    n_local = 5
    for n, mode, path in itertools.product((1, n_local, n_local + 1), MODES, ("prefill", "stats", "cache")):
        for n_global in (0, n, n + 2):
            out.append(
                Case(
                    kv_heads=2,
                    group=2,
                    n=n,
                    n_local=n_local,
                    n_global=n_global,
                    limit=n_local,
                    mode=mode,
                    path=path,
                    n_q=max(1, n - 2),
                    seed=n * 7 + n_global,
                )
            )
    out += [replace(c, positions="alibi", limit=2) for c in out[::7]]
    out += [replace(c, dtype="bfloat16") for c in out[::11]] + [
        replace(c, dtype="float16") for c in out[::13]
    ]
    return out


EDGE = _edge_cases()


@pytest.mark.parametrize("case", EDGE, ids=[f"{i}" for i in range(len(EDGE))])
def test_attend_edge_cases(case):
    """n = 1, n = n_local, n = n_local + 1 with n_global 0, = n and > n, every mode and path."""
    check(case)
    COUNT["edge"] += 1


def test_block_boundaries_and_long_windows(monkeypatch):
    """Several fused row blocks (ROWS lowered) and several explicit blocks (BLOCK_ELEMENTS lowered)."""
    import lminf_diag.attention.explicit as explicit
    import lminf_diag.attention.fused as fused

    monkeypatch.setattr(fused, "ROWS", 3)
    monkeypatch.setattr(explicit, "BLOCK_ELEMENTS", 64)
    for mode, path, n_local in itertools.product(MODES, ("prefill", "stats", "cache_sparse", "cache_bounded"),
                                                 (2, 3, 4, 7)):
        check(
            Case(
                kv_heads=1,
                group=2,
                n=23,
                n_local=n_local,
                n_global=3,
                limit=n_local - 1 or 1,
                mode=mode,
                path=path,
                n_q=9,
                seed=n_local,
            )
        )
        COUNT["edge"] += 1


def test_chunks_after_a_bounded_cache_take_the_fused_path(monkeypatch):
    """A chunk of queries after a bounded cache (globals, a gap, then the window) is computed by
    the fused prefill path, and agrees with the pair-by-pair reference."""
    import lminf_diag.attention.fused as fused
    import lminf_diag.attention.kernel as kernel

    calls = []
    real = fused.fused_attend
    monkeypatch.setattr(kernel, "fused_attend", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(fused, "ROWS", 3)
    for mode, n_local in itertools.product(("lambda", "mask_only"), (2, 4, 7)):
        check(Case(kv_heads=1, group=2, n=40, n_local=n_local, n_global=3, limit=n_local - 1 or 1, mode=mode,
                   path="cache_bounded", n_q=9, seed=n_local))
    assert len(calls) == 6
