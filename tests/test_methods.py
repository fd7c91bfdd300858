"""Rival long-context methods through the one kernel, each against an independent reference.

streaming: a naive cache-slot StreamingLLM (tests/reference.py: per query row, the cache it would
hold, positions by slot, float64). RoPE scaling: transformers' own model built from the scaled
rope configuration, run plainly. lambda+scaling: the dense LM-Infinite reference on that model.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import DynamicCache

import lminf_diag as ld
from lminf_diag.attention.kernel import attend
from lminf_diag.attention.method_spec import MethodSpec, method_names
from lminf_diag.attention.spec import LambdaSpec
from lminf_diag.errors import InvalidArgumentError, UnsupportedModelError
from lminf_diag.patch import current_method, current_spec, patch, unpatch
from lminf_diag.patch.cache import LambdaLayer

from . import reference
from .tiny import rope_info, tiny_model

FAMILIES = ["llama", "gpt_neox", "phi", "qwen2"]  # full RoPE, partial RoPE (x2), GQA
N, G, L = 48, 3, 8  # tokens; sinks / global tokens; window. Tiny models train at 32 positions.
TARGET = 64  # RoPE scaling to 64 tokens: factor 2
SCALED = {
    "linear": dict(rope_type="linear", factor=2.0),
    "dynamic": dict(rope_type="dynamic", factor=2.0),
    "yarn": dict(rope_type="yarn", factor=2.0, original_max_position_embeddings=32),
    "llama3": dict(rope_type="llama3", factor=2.0, original_max_position_embeddings=32, low_freq_factor=1.0,
                   high_freq_factor=4.0),
}


def _ids(n=N, seed=1):
    return torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(seed))


def _with_impl(model, impl, ids):
    prev = model.config._attn_implementation
    model.set_attn_implementation(impl)
    try:
        return model(ids).logits
    finally:
        model.set_attn_implementation(prev)
        reference.configure()


def _scaled_copy(model, params):
    """transformers' own model from the model's config with `params` as its rope parameters."""
    cfg = copy.deepcopy(model.config)
    keep = {k: v for k, v in cfg.rope_parameters.items() if k in ("rope_theta", "partial_rotary_factor")}
    cfg.rope_parameters = {**keep, **params}
    ref = type(model)(cfg).eval()
    ref.load_state_dict(model.state_dict())
    return ref


# ---------------------------------------------------------------- streaming

@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_streaming_prefill_matches_naive_cache_slots(family):
    model = tiny_model(family)
    ids = _ids()
    reference.configure(n_global=G, n_local=L, rope=rope_info(model))
    want = _with_impl(model, "lminf_test_streaming", ids)
    plain = model(ids).logits
    with ld.method(model, "streaming", n_global=G, n_local=L) as spec:
        got = model(ids).logits  # fused prefill path
        with ld.record(model, layers=[0]):
            got_stats = model(ids).logits  # explicit path (statistics requested)
    assert spec.attention.limit == G + L - 1
    assert (got - want).abs().max().item() <= 1e-5
    assert (got_stats - want).abs().max().item() <= 1e-5
    assert torch.allclose(got[:, : G + L], plain[:, : G + L], atol=1e-5)  # cache not full yet: true positions
    assert (got[:, G + L :] - plain[:, G + L :]).abs().max().item() > 1e-2  # then it differs


@pytest.mark.parametrize("family", FAMILIES + ["mpt", "bloom"])
@torch.no_grad()
def test_streaming_decoding_with_bounded_cache_equals_prefill(family):
    model = tiny_model(family)
    ids = _ids()
    with ld.method(model, "streaming", n_global=G, n_local=L):
        whole = model(ids).logits
        cache = DynamicCache()
        steps = [model(ids[:, :5], past_key_values=cache, use_cache=True).logits]
        for t in range(5, N):
            steps.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    layers = [layer for layer in cache.layers if isinstance(layer, LambdaLayer)]
    assert len(layers) == len(cache.layers) > 0
    assert all(layer.keys.shape[2] == G + L for layer in layers)  # sinks + the L most recent
    assert layers[0].positions.tolist() == list(range(G)) + list(range(N - L, N))
    assert (torch.cat(steps, 1) - whole).abs().max().item() <= 1e-5


@torch.no_grad()
def test_streaming_alibi_kernel_matches_naive_cache_slots():
    torch.manual_seed(0)
    H, n, D = 4, 30, 8
    q, k, v = torch.randn(3, 1, H, n, D).unbind(0)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    plan = LambdaSpec.resolve(32, n_global=G, n_local=L, mode="streaming").plan()
    want = reference.streaming_alibi_reference(q, k, v, slopes, 0.35, G, L)
    got = attend(q, k, v, plan, scaling=0.35, alibi=slopes)
    assert (got.double() - want).abs().max().item() <= 1e-5
    # the last row alone over a bounded cache (sinks + window, true positions), as when decoding
    keep = torch.cat((torch.arange(G), torch.arange(n - L, n)))
    row = attend(q[:, :, -1:], k[:, :, keep], v[:, :, keep], plan, scaling=0.35, k_pos=keep, alibi=slopes)
    assert (row.double() - want[:, -1:]).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- RoPE scaling

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(SCALED))
@torch.no_grad()
def test_rope_scaling_matches_transformers_scaled_model(family, name):
    model = tiny_model(family)
    ids = _ids()
    ref = _scaled_copy(model, SCALED[name])
    want = ref(ids).logits
    with ld.method(model, name, target_len=TARGET) as spec:
        got = model(ids).logits
    assert spec.rope.factor == 2.0
    assert (got - want).abs().max().item() <= 1e-5
    assert (want - model(ids).logits).abs().max().item() > 1e-2  # the scaling changed something


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(SCALED))
@torch.no_grad()
def test_lambda_with_rope_scaling_matches_dense_reference(family, name):
    """The kernel's far-key re-rotation uses the scaled table (limit < training length: a table
    that called a dynamic module would reset its grown frequencies mid-forward)."""
    model = tiny_model(family)
    ids = _ids()
    ref = _scaled_copy(model, SCALED[name])
    reference.configure("lambda", L, G, L, rope_info(ref))
    want = _with_impl(ref, "lminf_test_reference", ids)
    with ld.method(model, f"lambda+{name}", n_global=G, n_local=L, target_len=TARGET):
        got = model(ids).logits
    assert (got - want).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- restore, refusals, API

@pytest.mark.parametrize("name,settings", [("streaming", dict(n_global=G, n_local=L)),
                                           ("lambda+yarn", dict(n_global=G, n_local=L, target_len=TARGET)),
                                           ("dynamic", dict(target_len=TARGET))])
@torch.no_grad()
def test_method_restores_the_model_bitwise_also_on_error(name, settings):
    model = tiny_model("llama")
    ids = _ids()
    before = model(ids).logits
    params, rotary, impl = model.config.rope_parameters, model.model.rotary_emb, model.config._attn_implementation
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for fail in (False, True):
        with pytest.raises(RuntimeError) if fail else _nothing():
            with ld.method(model, name, **settings):
                model(ids)
                if fail:
                    raise RuntimeError("boom")
        assert model.config.rope_parameters is params and model.model.rotary_emb is rotary
        assert model.config._attn_implementation == impl and current_spec(model) is None
        assert current_method(model) is None
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert torch.equal(model(ids).logits, before)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("family,name,words", [
    ("mpt", "yarn", ["'yarn'", "mpt", "alibi", "streaming"]),
    ("bloom", "lambda+linear", ["'lambda+linear'", "bloom", "alibi", "Accepted"]),
    ("gptj", "dynamic", ["'dynamic'", "gptj", "sinusoid", "streaming"]),
    ("gemma3_text", "llama3", ["'llama3'", "gemma3_text", "per layer type"]),
])
def test_methods_that_do_not_apply_are_refused(family, name, words):
    model = tiny_model(family)
    impl = getattr(model.config, "_attn_implementation", None)
    with pytest.raises(UnsupportedModelError) as err:
        with ld.method(model, name, target_len=TARGET):
            pass
    assert all(w in str(err.value) for w in words), str(err.value)
    assert getattr(model.config, "_attn_implementation", None) == impl and current_method(model) is None


def test_bad_names_and_settings_are_explained():
    model = tiny_model("llama")
    with pytest.raises(InvalidArgumentError, match="unknown method 'streamin'.*streaming"):
        ld.method(model, "streamin").__enter__()
    with pytest.raises(InvalidArgumentError, match="'streaming' takes no factor"):
        ld.method(model, "streaming", factor=2.0).__enter__()
    with pytest.raises(InvalidArgumentError, match="factor= or target_len="):
        ld.method(model, "yarn").__enter__()
    with pytest.raises(InvalidArgumentError, match="no limit"):
        ld.method(model, "streaming", limit=5).__enter__()
    model.config.rope_parameters = {**model.config.rope_parameters, "rope_type": "linear", "factor": 2.0}
    with pytest.raises(UnsupportedModelError, match="already uses 'linear'"):
        ld.method(model, "dynamic", factor=2.0).__enter__()


@torch.no_grad()
def test_patch_with_method_and_lm_infinite_shorthand():
    model = tiny_model("llama")
    ids = _ids()
    before = model(ids).logits
    with ld.lm_infinite(model, n_global=G, n_local=L):
        short = model(ids).logits
    with ld.method(model, "lambda", n_global=G, n_local=L) as spec:
        long = model(ids).logits
        assert current_spec(model) == spec.attention
    assert torch.equal(short, long)
    spec = patch(model, method="lambda+linear", n_global=G, n_local=L, factor=2.0)
    assert isinstance(spec, MethodSpec) and spec.rope.factor == 2.0 and current_method(model) == spec
    unpatch(model)
    assert torch.equal(model(ids).logits, before) and current_method(model) is None
    assert isinstance(patch(model, n_global=G, n_local=L), LambdaSpec)  # the old signature
    unpatch(model)


@torch.no_grad()
def test_compare_runs_methods_into_traces_of_one_shape():
    model = tiny_model("llama")
    cmp = ld.compare(model, input_ids=_ids(), method=["lambda", "streaming", "yarn", "lambda+dynamic"], stride=1,
                     layers=[0, 1])
    assert list(cmp.traces) == ["baseline", "lambda", "streaming", "yarn", "lambda+dynamic"]
    shapes = {t.entropy.shape for t in cmp.traces.values()}
    assert len(shapes) == 1
    assert cmp.traces["streaming"].meta.patch["mode"] == "streaming"
    assert cmp.traces["yarn"].meta.patch is None and cmp.traces["yarn"].meta.extra["method"]["rope"]["factor"] == 1.5
    assert cmp.traces["lambda+dynamic"].meta.extra["method"]["rope"]["rope_type"] == "dynamic"
    legacy = ld.compare(model, input_ids=_ids(), modes=["lambda"], stride=1, layers=[0, 1])
    np.testing.assert_array_equal(legacy.traces["lambda"].nll, cmp.traces["lambda"].nll)  # same run, old API


def test_cli_method_labels():
    import argparse

    from lminf_diag.cli import options

    p = argparse.ArgumentParser()
    options.add_analysis_options(p)
    args = p.parse_args(["--method", "streaming,lambda+yarn", "--method", "dynamic"])
    assert options.labels(args) == ["baseline", "streaming", "lambda+yarn", "dynamic"]
    args = p.parse_args(["--mode", "lambda", "--method", "streaming"])
    assert options.labels(args) == ["baseline", "lambda", "streaming"]
    assert options.labels(p.parse_args([])) == ["baseline", "lambda"]
    with pytest.raises(SystemExit):
        p.parse_args(["--method", "nope"])
    assert "lambda+dynamic" in method_names()
