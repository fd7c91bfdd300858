"""Captured statistics against dense references computed from full attention probabilities."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from lminf_diag import lm_infinite, record
from lminf_diag.capture.compare import run_trace
from lminf_diag.errors import InvalidArgumentError

from . import reference
from .tiny import rope_info, tiny_model

N, N_LOCAL, N_GLOBAL = 40, 12, 3


def _ids(n=N):
    return torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(7))


def _dense(model, ids, mode):
    """Per-layer float64 (scores, probabilities), each (H, N, N), from the test's own reference."""
    record = []
    reference.configure(mode, N_LOCAL, N_GLOBAL, N_LOCAL, rope_info(model), record=record)
    prev = model.config._attn_implementation
    model.set_attn_implementation("lminf_test_reference")
    try:
        with torch.no_grad():
            model(ids)
    finally:
        model.set_attn_implementation(prev)
        reference.configure()
    return record


def _expected(s, p, sink_tokens, edges, rows, grid):
    s, p = s.numpy(), p.numpy()
    n = s.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1)), 0.0)
    ent = -(p * logp).sum(-1)
    mx = np.where(np.isfinite(s), s, -np.inf).max(-1)
    lse = np.log(np.exp(s - mx[..., None]).sum(-1)) + mx
    sink = p[..., :sink_tokens].sum(-1)
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    dist = np.zeros(p.shape[:2] + (len(edges) - 1,))
    for b in range(len(edges) - 1):
        sel = (d >= edges[b]) & (d < edges[b + 1])
        dist[..., b] = (p * sel).sum(-1)
    prof = np.full((s.shape[0], len(rows), len(grid)), np.nan)
    band = np.full_like(prof, np.nan)
    for r, row in enumerate(rows):
        vals = s[:, row, row::-1]  # (H, row+1) logits by distance 0..row
        run = np.maximum.accumulate(vals, axis=-1)
        prev = -1
        for gi, dd in enumerate(grid):
            if dd <= row:
                prof[:, r, gi] = run[:, dd]
            seg = vals[:, prev + 1 : min(dd, row) + 1]  # distances (prev, dd]
            if seg.shape[1] and np.isfinite(seg).any():
                band[:, r, gi] = np.where(np.isfinite(seg), seg, -np.inf).max(-1)
                band[:, r, gi][~np.isfinite(seg).any(-1)] = np.nan
            prev = dd
    return dict(entropy=ent, max_logit=mx, lse=lse, sink_mass=sink, dist_mass=dist, logit_profile=prof,
                profile_band=band)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "qwen3"])
@pytest.mark.parametrize("mode", [None, "lambda", "mask_only", "cap_only", "window"])
def test_statistics_match_dense_reference(family, mode):
    model = tiny_model(family)
    ids = _ids()
    dense = _dense(model, ids, mode)
    ctx = lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, mode=mode) if mode else _nullctx()
    with torch.no_grad(), ctx, record(model, sink_tokens=2, profile_rows=[N - 1, 20]) as rec:
        model(ids)
    tr = rec.trace
    for li, (s, p) in enumerate(dense):
        # layer 0 sees identical q, k in both runs: 1e-6. Later layers inherit the fp32-vs-float64
        # difference of the layers below (about 1e-6 relative), so they get 1e-5.
        tol = 1e-6 if li == 0 else 1e-5
        want = _expected(s, p, 2, tr.dist_edges, list(tr.profile_rows), tr.profile_dist)
        for name in ("entropy", "max_logit", "lse", "sink_mass", "logit_profile", "profile_band"):
            np.testing.assert_allclose(getattr(tr, name)[li], want[name], rtol=tol, atol=tol, err_msg=name)
        # dist_mass is stored as float16 (3 significant digits)
        np.testing.assert_allclose(tr.dist_mass[li].astype(np.float64), want["dist_mass"], atol=1e-3)


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@torch.no_grad()
def test_capture_does_not_change_outputs_and_strided_rows_agree():
    model = tiny_model("llama")
    ids = _ids()
    base = model(ids).logits
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
        patched = model(ids).logits
        with record(model) as full:
            got = model(ids).logits
        with record(model, stride=4) as strided:
            got2 = model(ids).logits
    assert (got - patched).abs().max().item() <= 1e-5
    assert torch.equal(got2, patched)
    assert torch.equal(model(ids).logits, base)
    t1, t4 = full.trace, strided.trace
    idx = np.searchsorted(t1.positions, t4.positions)
    np.testing.assert_allclose(t1.entropy[:, :, idx], t4.entropy, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_hidden_states_and_nll_match_the_model():
    model = tiny_model("llama")
    ids = _ids()
    out = model(ids, output_hidden_states=True)
    tr = run_trace(model, ids, hidden_layers=[0, 1])
    np.testing.assert_allclose(tr.hidden[0], out.hidden_states[0][0].numpy(), atol=2e-3)
    np.testing.assert_allclose(tr.hidden[1], out.hidden_states[1][0].numpy(), atol=2e-3)
    lp = torch.log_softmax(out.logits[0].double(), -1)
    want = -lp[:-1].gather(-1, ids[0, 1:, None])[:, 0].numpy()
    assert np.isnan(tr.nll[0])
    np.testing.assert_allclose(tr.nll[1:], want, rtol=1e-5, atol=1e-5)


def test_no_hook_or_patch_left_after_exception_and_model_is_freed():
    model = tiny_model("llama")
    ids = _ids()

    def hooks(m):
        return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())

    before = (hooks(model), model.config._attn_implementation)
    with pytest.raises(RuntimeError, match="boom"):
        with lm_infinite(model, n_global=2, n_local=8), record(model, hidden_layers=[1]) as rec:
            model(ids)
            raise RuntimeError("boom")
    assert (hooks(model), model.config._attn_implementation) == before
    trace = rec.trace
    ref_model, ref_trace = weakref.ref(model), weakref.ref(trace)
    del model, rec, trace
    gc.collect()
    assert ref_model() is None and ref_trace() is None


def test_capture_rejects_bad_layers_and_heads():
    model = tiny_model("llama")
    with pytest.raises(InvalidArgumentError, match=r"layers \[5\] out of range: this model has layers 0..1"):
        with record(model, layers=[5]):
            pass
    with pytest.raises(InvalidArgumentError, match=r"heads \[9\] out of range"):
        with record(model, heads=[9]):
            pass
    assert model.config._attn_implementation == "sdpa"
