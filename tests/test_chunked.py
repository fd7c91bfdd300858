"""A window read in chunks under a bounded-cache method gives the trace of a single patched pass
(to fp32 noise): statistics of every recorded row, logit profiles, hidden states and the loss,
with and without the baseline's shared prefix; runs that attend every key are never chunked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lminf_diag.capture.compare import run_trace
from lminf_diag.capture.prefix import Prefix

from .tiny import tiny_model

N, N_LOCAL, N_GLOBAL, T, CHUNK = 150, 32, 3, 32, 23  # a chunk size that divides nothing
FIELDS = ("entropy", "max_logit", "lse", "sink_mass", "logit_profile", "profile_band", "nll")
KW = dict(hidden_layers=[0, 1, 2], stride=3, hidden_stride=3, train_len=T)


def _ids():
    return torch.randint(3, 128, (1, N), generator=torch.Generator().manual_seed(5))


def _same(a, b):
    for name in FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=3e-5, atol=3e-5, err_msg=name)
    np.testing.assert_allclose(a.dist_mass.astype(float), b.dist_mass.astype(float), atol=2e-3)
    np.testing.assert_array_equal(a.hidden_positions, b.hidden_positions)
    np.testing.assert_allclose(a.hidden.astype(float), b.hidden.astype(float), rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(a.positions, b.positions)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "bloom"])
@pytest.mark.parametrize("mode", ["lambda", "window", "streaming"])
@torch.no_grad()
def test_chunked_trace_equals_single_pass(family, mode):
    model = tiny_model(family)
    patch = dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode=mode)
    single = run_trace(model, _ids(), label=mode, patch=patch, chunk=0, **KW)
    seen: list[tuple[int, int]] = []
    chunked = run_trace(model, _ids(), label=mode, patch=patch, chunk=CHUNK,
                        progress=lambda d, t, u: seen.append((d, t)), **KW)
    assert chunked.meta.extra["chunk"] == CHUNK and "chunk" not in single.meta.extra
    # the first chunk is n_local long (every later chunk then follows a full window), then CHUNK each
    assert seen[0] == (N_LOCAL, N) and seen[-1] == (N, N) and len(seen) == 1 + -(-(N - N_LOCAL) // CHUNK)
    assert np.isfinite(chunked.nll[1:]).all()
    _same(chunked, single)


@torch.no_grad()
def test_chunked_run_continues_from_the_baselines_prefix():
    model = tiny_model("llama")
    held: list[Prefix] = []
    run_trace(model, _ids(), keep_prefix=N_LOCAL, on_prefix=held.append, **KW)
    patch = dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode="lambda")
    single = run_trace(model, _ids(), label="lambda", patch=patch, chunk=0, **KW)
    chunked = run_trace(model, _ids(), label="lambda", patch=patch, chunk=CHUNK, prefix=held[0], **KW)
    assert chunked.meta.extra["shared_prefix"] == N_LOCAL
    _same(chunked, single)


@torch.no_grad()
def test_method_runs_are_chunked_and_full_attention_is_not():
    model = tiny_model("qwen2")
    single = run_trace(model, _ids(), method="lambda", chunk=0, **KW)
    chunked = run_trace(model, _ids(), method="lambda", chunk=CHUNK, **KW)
    _same(chunked, single)
    for kw in (dict(), dict(patch=dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode="cap_only"))):
        trace = run_trace(model, _ids(), chunk=CHUNK, **kw, **KW)
        assert "chunk" not in trace.meta.extra


@torch.no_grad()
def test_single_pass_reports_progress_per_layer():
    model = tiny_model("llama")
    seen: list[tuple[int, int]] = []
    run_trace(model, _ids(), progress=lambda d, t, u: seen.append((d, t)), **KW)
    layers = model.config.num_hidden_layers
    assert seen == [(i + 1, layers) for i in range(layers)]


@torch.no_grad()
def test_a_stopped_baseline_is_the_full_baseline_cut_short():
    model = tiny_model("llama")
    full = run_trace(model, _ids(), **KW)
    held: list[Prefix] = []
    stop = 100
    cut = run_trace(model, _ids(), stop=stop, keep_prefix=N_LOCAL, on_prefix=held.append, **KW)
    assert cut.meta.extra["stopped_at"] == stop and cut.n_tokens == N
    early = cut.positions < stop
    np.testing.assert_array_equal(cut.positions, full.positions)
    for name in ("entropy", "max_logit", "lse", "sink_mass"):
        np.testing.assert_allclose(getattr(cut, name)[..., early], getattr(full, name)[..., early], atol=2e-5)
        assert np.isnan(getattr(cut, name)[..., ~early]).all()
    rows = cut.profile_rows < stop
    np.testing.assert_allclose(cut.logit_profile[:, :, rows], full.logit_profile[:, :, rows], atol=2e-5)
    assert np.isnan(cut.logit_profile[:, :, ~rows]).all()
    np.testing.assert_allclose(cut.nll[:stop], full.nll[:stop], atol=2e-5)
    assert np.isnan(cut.nll[stop:]).all()
    assert cut.hidden_positions.max() < stop and cut.hidden.shape[1] == len(cut.hidden_positions)
    keep = np.isin(full.hidden_positions, cut.hidden_positions)
    np.testing.assert_allclose(cut.hidden.astype(float), full.hidden[:, keep].astype(float), atol=2e-3)
    # a patched run still starts from the stopped baseline's prefix, hidden states included
    patch = dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode="lambda")
    single = run_trace(model, _ids(), label="lambda", patch=patch, chunk=0, **KW)
    shared = run_trace(model, _ids(), label="lambda", patch=patch, chunk=CHUNK, prefix=held[0], **KW)
    _same(shared, single)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("family", ["llama", "bloom"])
@torch.no_grad()
def test_an_interrupted_chunked_capture_resumes_from_its_checkpoint(tmp_path, family):
    model = tiny_model(family)
    patch = dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode="lambda")
    single = run_trace(model, _ids(), label="lambda", patch=patch, chunk=0, **KW)
    ckpt = tmp_path / "partial" / "lambda.pt"

    def stop_after_three(done, total, unit):
        if done >= 3 * CHUNK:
            raise _Stop

    with pytest.raises(_Stop):
        run_trace(model, _ids(), label="lambda", patch=patch, chunk=CHUNK, progress=stop_after_three,
                  checkpoint=ckpt, checkpoint_seconds=0, **KW)
    assert ckpt.is_file()
    seen: list[int] = []
    resumed = run_trace(model, _ids(), label="lambda", patch=patch, chunk=CHUNK, checkpoint=ckpt,
                        checkpoint_seconds=0, progress=lambda d, t, u: seen.append(d), **KW)
    assert seen[0] == N_LOCAL + 3 * CHUNK  # the three chunks before the stop were not read again
    _same(resumed, single)
    # a checkpoint of other settings is ignored: the capture starts afresh and is still right
    other = run_trace(model, _ids(), label="lambda", patch={**patch, "n_global": 1}, chunk=CHUNK,
                      checkpoint=ckpt, checkpoint_seconds=1e9, progress=lambda d, t, u: seen.append(d), **KW)
    n_chunks = 1 + -(-(N - N_LOCAL) // CHUNK)
    assert seen[-n_chunks] == N_LOCAL and len(seen) == len(set(seen[:-n_chunks])) + n_chunks
    plain = run_trace(model, _ids(), label="lambda", patch={**patch, "n_global": 1}, chunk=0, **KW)
    _same(other, plain)
