"""Bounded KV cache under the patch: constant size, true positions, same output as no cache."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from lminf_diag import lm_infinite
from lminf_diag.patch.cache import LambdaLayer

from .tiny import tiny_model

G, W = 3, 16


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gptj", "mpt", "bloom"])
@torch.no_grad()
def test_bounded_generation_equals_uncached_recomputation(family):
    model = tiny_model(family)
    prompt = torch.randint(3, 128, (1, 24), generator=torch.Generator().manual_seed(3))
    steps = 240  # far past n_global + n_local
    with lm_infinite(model, n_global=G, n_local=W):
        seq = model.generate(prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        logits = model(seq, use_cache=False).logits
    assert seq.shape[1] == 24 + steps
    assert torch.equal(logits[0, 23:-1].argmax(-1), seq[0, 24:])


@pytest.mark.parametrize("family", ["llama", "mpt"])
@torch.no_grad()
def test_cache_size_stays_bounded_with_true_positions(family):
    model = tiny_model(family)
    cache = DynamicCache()
    tok = torch.tensor([[5]])
    with lm_infinite(model, n_global=G, n_local=W):
        out = model(torch.randint(3, 128, (1, 20)), past_key_values=cache, use_cache=True)
        for _ in range(200):
            tok = out.logits[:, -1:].argmax(-1)
            out = model(tok, past_key_values=cache, use_cache=True)
    layers = [layer for layer in cache.layers if isinstance(layer, LambdaLayer)]
    assert len(layers) == len(cache.layers) > 0
    for layer in layers:
        assert layer.keys.shape[2] == G + W
        assert layer.positions.tolist() == list(range(G)) + list(range(220 - W, 220))
    assert cache.get_seq_length() == 220


@torch.no_grad()
def test_chunked_prefill_equals_one_pass():
    model = tiny_model("llama")
    ids = torch.randint(3, 128, (1, 100), generator=torch.Generator().manual_seed(5))
    with lm_infinite(model, n_global=G, n_local=W):
        whole = model(ids).logits
        cache = DynamicCache()
        parts = []
        for a in range(0, 100, 13):
            out = model(ids[:, a : a + 13], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            parts.append(out.logits)
        assert all(layer.keys.shape[2] <= G + W for layer in cache.layers)
    chunked = torch.cat(parts, dim=1)
    assert (chunked - whole).abs().max().item() <= 1e-5


def test_cap_only_keeps_a_full_cache():
    model = tiny_model("llama")
    cache = DynamicCache()
    with torch.no_grad(), lm_infinite(model, n_global=G, n_local=W, mode="cap_only"):
        model(torch.randint(3, 128, (1, 40)), past_key_values=cache, use_cache=True)
    assert not any(isinstance(layer, LambdaLayer) for layer in cache.layers)
    assert cache.get_seq_length() == 40 and cache.layers[0].keys.shape[2] == 40
