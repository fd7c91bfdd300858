"""What a patched forward returns besides logits: Λ attention weights and the bounded KV cache."""

from __future__ import annotations

import pytest
import torch

import lminf_diag as ld
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.patch import weights as weights_mod
from lminf_diag.patch.cache import LambdaLayer

from . import reference
from .tiny import rope_info, tiny_model

N, N_LOCAL, N_GLOBAL = 24, 8, 2


def _reference_probs(model, ids, mode, limit):
    """Per-layer (H, N, N) float64 probabilities of the independent dense reference."""
    record: list = []
    reference.configure(mode, N_LOCAL, N_GLOBAL, limit, rope_info(model), record=record)
    model.set_attn_implementation("lminf_test_reference")
    try:
        with torch.no_grad():
            model(ids)
    finally:
        model.set_attn_implementation("sdpa")
        reference.configure()
    return [p for _, p in record]


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gptj"])
@pytest.mark.parametrize("mode", ["lambda", "window", "cap_only"])
def test_output_attentions_match_dense_reference(family, mode):
    model = tiny_model(family)
    ids = torch.randint(0, 128, (1, N), generator=torch.Generator().manual_seed(0))
    want = _reference_probs(model, ids, mode, N_LOCAL)
    with ld.lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, mode=mode), torch.no_grad():
        out = model(ids, output_attentions=True)
    got = out.attentions
    assert got is not None and len(got) == len(want) == model.config.num_hidden_layers
    for layer, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == (1, w.shape[0], N, N), layer
        torch.testing.assert_close(g[0].double(), w, atol=2e-5, rtol=1e-4)


def test_lambda_weights_vanish_outside_the_lambda():
    """Analytic: a query attends only its last N_LOCAL keys and the first N_GLOBAL; rows sum to one."""
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (1, N), generator=torch.Generator().manual_seed(1))
    with ld.lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL), torch.no_grad():
        attn = model(ids, output_attentions=True).attentions
    i, j = torch.arange(N)[:, None], torch.arange(N)[None, :]
    allowed = (j <= i) & ((i - j < N_LOCAL) | (j < N_GLOBAL))
    for a in attn:
        assert float(a[0][:, ~allowed].abs().max()) == 0.0
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))


def test_output_attentions_past_the_dense_limit_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(weights_mod, "MAX_DENSE_KEYS", 16)
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (1, N))
    with ld.lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL), torch.no_grad():
        with pytest.raises(InvalidArgumentError, match="output_attentions.*16 keys"):
            model(ids, output_attentions=True)


def test_bare_forward_with_use_cache_gets_the_bounded_cache():
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (1, N + 1), generator=torch.Generator().manual_seed(2))
    with ld.lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL), torch.no_grad():
        full = model(ids, use_cache=False).logits  # the patched forward over all N + 1 tokens
        first = model(ids[:, :N], use_cache=True)
        cache = first.cache if getattr(first, "cache", None) is not None else first.past_key_values
        assert all(isinstance(layer, LambdaLayer) for layer in cache.layers)
        assert {layer.keys.shape[2] for layer in cache.layers} == {N_GLOBAL + N_LOCAL}
        step = model(ids[:, N:], cache=cache, use_cache=True).logits
    torch.testing.assert_close(first.logits, full[:, :N], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


def test_plain_model_keeps_its_own_cache():
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (1, N))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    assert not any(isinstance(layer, LambdaLayer) for layer in cache.layers)
