"""A patched capture that starts from the baseline's KV cache of its first n_local tokens gives
the trace of a full patched pass (to fp32 noise), for every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lminf_diag.capture.compare import compare, run_trace
from lminf_diag.capture.prefix import Prefix

from .tiny import tiny_model

N, N_LOCAL, N_GLOBAL, T = 96, 32, 3, 32
FIELDS = ("entropy", "max_logit", "lse", "sink_mass", "logit_profile", "profile_band", "nll")


def _ids():
    return torch.randint(3, 128, (1, N), generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
@pytest.mark.parametrize("mode", ["lambda", "mask_only", "cap_only", "window"])
@torch.no_grad()
def test_shared_prefix_equals_full_patched_pass(family, mode):
    model = tiny_model(family)
    ids = _ids()
    kw = dict(hidden_layers=[1, 2], stride=3, hidden_stride=3, train_len=T)
    held: list[Prefix] = []
    base = run_trace(model, ids, keep_prefix=N_LOCAL, on_prefix=held.append, **kw)
    assert len(held) == 1 and held[0].length == N_LOCAL
    patch = dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode=mode)
    full = run_trace(model, ids, label=mode, patch=patch, **kw)
    shared = run_trace(model, ids, label=mode, patch=patch, prefix=held[0], **kw)
    assert shared.meta.extra["shared_prefix"] == N_LOCAL and "shared_prefix" not in full.meta.extra
    for name in FIELDS:
        np.testing.assert_allclose(getattr(shared, name), getattr(full, name), rtol=2e-5, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(shared.dist_mass.astype(float), full.dist_mass.astype(float), atol=2e-3)
    np.testing.assert_allclose(shared.hidden.astype(float), full.hidden.astype(float), rtol=2e-3, atol=2e-3)
    # the cache is copied for each use: a second patched run from the same prefix agrees too
    again = run_trace(model, ids, label=mode, patch=patch, prefix=held[0], **kw)
    np.testing.assert_array_equal(again.entropy, shared.entropy)
    np.testing.assert_array_equal(base.nll, held[0].trace.nll)


@torch.no_grad()
def test_compare_shares_the_prefix_and_matches_separate_runs():
    model = tiny_model("llama")
    ids = _ids()
    cmp = compare(model, input_ids=ids, modes=("lambda", "window"), n_global=N_GLOBAL, n_local=N_LOCAL,
                  hidden_layers=[1], stride=2)
    alone = compare(model, input_ids=ids, modes=("window",), baseline=False, n_global=N_GLOBAL,
                    n_local=N_LOCAL, hidden_layers=[1], stride=2)
    assert cmp.traces["window"].meta.extra.get("shared_prefix") == N_LOCAL
    np.testing.assert_allclose(cmp.traces["window"].entropy, alone.traces["window"].entropy, atol=2e-5)
    np.testing.assert_allclose(cmp.traces["window"].nll, alone.traces["window"].nll, atol=2e-5)
