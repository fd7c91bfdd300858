"""The explicit path's block machinery against independent references: blocks run side by side
on threads, the compiled row kernel and the torch-operations fallback, prefix sums over a
block's columns, the log-sum-exp when a row's first and last keys carry no mass, and gradients
through the explicit path."""

from __future__ import annotations

import itertools

import pytest
import torch

import lminf_diag.attention.explicit as explicit
from lminf_diag.attention.kernel import attend
from lminf_diag.attention.spec import Plan
from lminf_diag.attention.stats import StatsRequest, log_edges, prefix_sums
from tests.test_kernel_property import MODES, Case, check


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["compiled", "torch"])
def native_mode(request, monkeypatch):
    """Run a test with the compiled row kernel and with the torch-operations fallback."""
    if request.param == "torch":
        monkeypatch.setattr(explicit, "rowstats", lambda: None)
    elif explicit.rowstats() is None:
        pytest.skip("the compiled CPU statistics kernel could not be built here")
    return request.param


def test_blocks_on_threads_match_the_pairwise_reference(monkeypatch, two_threads):
    """Many small blocks, run by several worker threads, against the per-pair float64 reference."""
    monkeypatch.setattr(explicit, "BLOCK_ELEMENTS", 48)
    assert explicit._workers(torch.device("cpu"), False, 10) == 2
    for mode, path in itertools.product(MODES, ("stats", "stats_rows", "cache_sparse")):
        check(Case(kv_heads=2, group=2, n=29, n_local=5, n_global=2, limit=4, mode=mode, path=path, n_q=11,
                   seed=3))


def test_threaded_blocks_equal_one_thread_bitwise(monkeypatch, two_threads, native_mode):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 300, 8, generator=gen) for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    monkeypatch.setattr(explicit, "BLOCK_ELEMENTS", 4096)
    outs = []
    for workers in (1, 2):
        monkeypatch.setattr(explicit, "MAX_WORKERS", workers)
        got = {}
        req = StatsRequest(sink=lambda sl, res, got=got: got.setdefault(sl.start, res), dist_edges=log_edges(300))
        outs.append((attend(q, k, v, Plan(), scaling=0.3, stats=req), got))
    (o1, s1), (o2, s2) = outs
    assert torch.equal(o1, o2) and s1.keys() == s2.keys()
    for a in s1:
        for name in ("entropy", "max_logit", "lse", "sink_mass", "dist_mass"):
            assert torch.equal(s1[a][name], s2[a][name])


@pytest.mark.parametrize("rows", ["consecutive", "spread"])
def test_prefix_sums_match_a_loop(rows):
    """Both strategies (segment sums + windows, and the cumulative sum for spread rows)."""
    gen = torch.Generator().manual_seed(1)
    K, nb = 200, 12
    x = torch.rand(2, 3, nb, K, generator=gen, dtype=torch.float64)
    step = 1 if rows == "consecutive" else 15
    q_pos = 150 + step * torch.arange(nb) - (nb * step) // 2
    k_pos = torch.arange(K)
    edges = torch.as_tensor(log_edges(400))
    cnt = torch.searchsorted(k_pos, q_pos[:, None] - edges[None, :], right=True)
    got = prefix_sums(x, cnt)
    want = torch.zeros(2, 3, nb, len(edges), dtype=torch.float64)
    for r in range(nb):
        for e in range(len(edges)):
            want[:, :, r, e] = x[:, :, r, : int(cnt[r, e])].sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_statistics_when_first_and_last_keys_carry_no_mass(native_mode):
    """One middle key dominates by ~150 nats, so the first and last attended keys have
    probability 0 in fp32: lse, entropy and masses still match a float64 reference."""
    n, D = 12, 4
    q = torch.zeros(1, 1, n, D)
    q[..., 0] = 10.0
    k = torch.randn(1, 1, n, D, generator=torch.Generator().manual_seed(2)) * 0.1
    k[0, 0, 5, 0] = 30.0
    v = torch.randn(1, 1, n, D)
    got = {}
    edges = log_edges(n)
    req = StatsRequest(sink=lambda sl, res: got.update({k_: x.double() for k_, x in res.items()}),
                       sink_tokens=2, dist_edges=edges)
    attend(q, k, v, Plan(), scaling=0.5, stats=req)
    s = (q.double() @ k.double().transpose(-1, -2)) * 0.5
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None])
    rows = slice(6, None)  # rows past the dominant key: their first and last keys have p == 0
    # fp32 scores near 150: one unit in the last place is 1.5e-5
    torch.testing.assert_close(got["lse"][..., rows], lse[..., rows], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(got["max_logit"][..., rows], s.amax(-1)[..., rows], rtol=1e-6, atol=1e-5)
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    torch.testing.assert_close(got["entropy"], ent, rtol=0, atol=1e-4)
    d = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    lo, hi = torch.as_tensor(edges[:-1]), torch.as_tensor(edges[1:])
    bins = ((d[..., None] >= lo) & (d[..., None] < hi)).double()  # (n, n, bins)
    torch.testing.assert_close(got["dist_mass"][0, 0], torch.einsum("qk,qkb->qb", p[0, 0], bins), atol=1e-6,
                               rtol=0)


def test_gradients_through_the_explicit_path():
    """ALiBi sends attention through the explicit path; autograd must work there (no out= ops)
    and match a dense float64 reference."""
    gen = torch.Generator().manual_seed(4)
    B, H, n, D = 1, 2, 9, 4
    q, k, v = (torch.randn(B, H, n, D, generator=gen, dtype=torch.float64) for _ in range(3))
    slopes = torch.tensor([0.5, 0.25], dtype=torch.float64)
    plan = Plan(n_local=4, n_global=2)
    qg, kg, vg = (x.float().requires_grad_() for x in (q, k, v))
    out = attend(qg, kg, vg, plan, scaling=0.5, alibi=slopes.float())
    (out.double() ** 2).sum().backward()
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    d = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    ok = (d >= 0) & ((d < 4) | (torch.arange(n)[None, :] < 2))
    s = (qr @ kr.transpose(-1, -2)) * 0.5 - slopes[:, None, None] * d
    ref = torch.softmax(s.masked_fill(~ok, float("-inf")), -1) @ vr
    (ref.transpose(1, 2) ** 2).sum().backward()
    for a, b in ((qg, qr), (kg, kr), (vg, vr)):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-5)


def test_both_statistics_paths_match_the_pairwise_reference(monkeypatch, native_mode):
    monkeypatch.setattr(explicit, "BLOCK_ELEMENTS", 40)
    for mode, path, positions in itertools.product(MODES, ("stats", "stats_rows", "cache_sparse"), ("rope", "alibi")):
        check(Case(kv_heads=1, group=3, n=31, n_local=6, n_global=2, limit=5, mode=mode, path=path, n_q=13,
                   positions=positions, seed=5))


def test_compiled_row_kernel_against_float64():
    """Rows of awkward lengths (not multiples of the vector width, longer than one 256-element
    chunk), masked entries, and cut columns at 0, K and in between."""
    mod = explicit.rowstats()
    if mod is None:
        pytest.skip("the compiled CPU statistics kernel could not be built here")
    gen = torch.Generator().manual_seed(6)
    for K in (1, 7, 8, 9, 300, 1031):
        nb, heads = 3, 2
        s = torch.randn(heads * nb, K, generator=gen) * 4
        if K > 2:
            s[::2, -2:] = -1e30  # masked
        cuts = torch.sort(torch.randint(0, K + 1, (nb, 5), generator=gen), 1, descending=True).values
        cuts[:, 0], cuts[:, -1] = K, 0
        p = torch.empty_like(s)
        top, lse, ent = torch.empty(heads * nb), torch.empty(heads * nb), torch.empty(heads * nb)
        pref = torch.empty(heads * nb, 5)
        mod.softmax_stats(s, p, cuts.contiguous(), top, lse, ent, pref)
        sd = s.double()
        want_p = torch.softmax(sd, -1)
        torch.testing.assert_close(p.double(), want_p, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(top.double(), sd.amax(-1), rtol=0, atol=0)
        want_lse = torch.logsumexp(sd, -1)
        torch.testing.assert_close(lse.double(), want_lse, rtol=1e-6, atol=1e-6)
        want_ent = -(want_p * torch.log(want_p.clamp_min(1e-300))).sum(-1)
        torch.testing.assert_close(ent.double(), want_ent, rtol=1e-6, atol=1e-5)
        cs = torch.cat((torch.zeros(heads * nb, 1, dtype=torch.float64), want_p.cumsum(-1)), -1)
        torch.testing.assert_close(pref.double(), cs.gather(-1, cuts.repeat(heads, 1)), rtol=1e-6, atol=1e-6)


def test_kernel_falls_back_to_torch_when_the_compiled_kernel_cannot_be_built(monkeypatch):
    import torch.utils.cpp_extension as cpp

    import lminf_diag.attention.native as native

    def fail(**kw):
        raise OSError("no C++ compiler found")

    monkeypatch.setattr(cpp, "load", fail)
    monkeypatch.setattr(native, "_STATE", {"tried": False, "module": None})
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found.*torch operations instead"):
        assert native.rowstats() is None
    assert native.rowstats() is None  # tried once, no second warning
    monkeypatch.setenv("LMINF_DIAG_NATIVE", "0")
    assert native.rowstats() is None
