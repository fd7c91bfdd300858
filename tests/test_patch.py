"""The patch against an independent dense reference, for every supported family and mode."""

from __future__ import annotations

import pytest
import torch

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.patch import lm_infinite, patch, unpatch

from . import reference
from .tiny import FAMILIES, ROPE_FAMILIES, extend_gptj_table, rope_info, tiny_model

N, N_LOCAL, N_GLOBAL = 48, 16, 3
MODES = ["lambda", "mask_only", "cap_only", "window"]


def _ids(n=N, seed=1):
    return torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(seed))


def _reference_logits(model, ids, mode, limit, **extra):
    """Logits under the dense reference; `extra`: its top-k settings (top_k, top_k_from, top_k_distance)."""
    prev = model.config._attn_implementation
    reference.configure(mode, N_LOCAL, N_GLOBAL, limit, rope_info(model), **extra)
    model.set_attn_implementation("lminf_test_reference")
    try:
        return model(ids).logits
    finally:
        model.set_attn_implementation(prev)
        reference.configure()


@pytest.mark.parametrize("family", ROPE_FAMILIES)
@torch.no_grad()
def test_patched_logits_match_dense_reference(family):
    model = tiny_model(family)
    if family == "gptj":
        extend_gptj_table(model)
    ids = _ids()
    for mode in MODES:
        for limit in (N_LOCAL, N_LOCAL - 1):
            want = _reference_logits(model, ids, mode, limit)
            with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, limit=limit, mode=mode):
                got = model(ids).logits
            err = (got - want).abs().max().item()
            assert err <= 1e-5, f"{family} {mode} limit={limit}: max abs error {err:.2e}"


@pytest.mark.parametrize("family", ["mpt", "bloom"])
@torch.no_grad()
def test_alibi_attention_matches_dense_reference(family):
    """The replaced ALiBi forward (past MPT's max_seq_len) against a dense reference on the same q, k, v."""
    model = tiny_model(family)
    attn = [m for m in model.modules() if type(m).__name__ in ("MptAttention", "BloomAttention")][0]
    seen = {}

    def grab_in(mod, args, kwargs):
        seen["x"] = args[0]
        seen["residual"] = args[1] if family == "bloom" else 0

    def grab_out(mod, args, kwargs, out):
        seen["out"] = out[0]

    hooks = [attn.register_forward_pre_hook(grab_in, with_kwargs=True),
             attn.register_forward_hook(grab_out, with_kwargs=True)]
    ids = _ids()
    try:
        for mode in MODES:
            for limit in (N_LOCAL, N_LOCAL - 1):
                with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, limit=limit, mode=mode):
                    model(ids)
                x = seen["x"]
                if family == "mpt":
                    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

                    q, k, v = (t.reshape(1, N, 4, 8).transpose(1, 2) for t in attn.Wqkv(x).chunk(3, dim=2))
                    tab = build_mpt_alibi_tensor(4, 2, model.config.attn_config.alibi_bias_max)
                    slopes, scale, proj = tab[:, 0, 1] - tab[:, 0, 0], attn.softmax_scale, attn.out_proj
                else:
                    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

                    q, k, v = attn._reshape(attn.query_key_value(x))
                    slopes, scale, proj = _get_alibi_slopes(4, x.device), attn.inv_norm_factor, attn.dense
                ctx = reference.alibi_reference(q, k, v, slopes, scale, mode, N_LOCAL, N_GLOBAL, limit)
                want = proj(ctx.reshape(1, N, -1).float()) + seen["residual"]
                err = (seen["out"] - want).abs().max().item()
                assert err <= 1e-5, f"{family} {mode} limit={limit}: {err:.2e}"
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_short_input_equals_unpatched_and_unpatch_is_bitwise(family):
    model = tiny_model(family)
    ids = _ids(24)
    base = model(ids).logits
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
        long_patched = model(_ids(40)).logits
    with lm_infinite(model, n_global=N_GLOBAL, n_local=32):
        short = model(ids).logits
    assert (short - base).abs().max().item() <= 1e-5
    assert long_patched.shape[1] == 40
    assert torch.equal(model(ids).logits, base)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gptj", "mpt", "bloom", "gemma2"])
@torch.no_grad()
def test_cached_generation_equals_recomputation(family):
    model = tiny_model(family)
    prompt = _ids(20)
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
        out = model.generate(prompt, max_new_tokens=40, do_sample=False, min_new_tokens=40)
        logits = model(out).logits
    assert out.shape[1] == 60
    assert torch.equal(logits[0, 19:-1].argmax(-1), out[0, 20:])


@torch.no_grad()
def test_exception_restores_model_bitwise():
    model = tiny_model("llama")
    ids = _ids()
    base = model(ids).logits
    with pytest.raises(RuntimeError, match="boom"):
        with lm_infinite(model, n_global=2, n_local=8):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(model(ids).logits, base)
    patch(model, n_global=2, n_local=8)
    assert model.config._attn_implementation != "sdpa"
    unpatch(model)
    assert torch.equal(model(ids).logits, base)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_local=0), "n_local must be >= 1"),
        (dict(n_global=-1), "n_global must be >= 0"),
        (dict(limit=0), "limit must be >= 1"),
        (dict(mode="sideways"), "mode must be one of lambda, mask_only, cap_only, window"),
    ],
)
def test_invalid_arguments_are_explained(kwargs, words):
    model = tiny_model("llama")
    with pytest.raises(InvalidArgumentError, match=words):
        patch(model, **kwargs)
    assert model.config._attn_implementation == "sdpa"


def test_unsupported_model_names_supported_families():
    import transformers as tf

    from lminf_diag.errors import UnsupportedModelError

    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=64))
    with pytest.raises(UnsupportedModelError) as err:
        patch(model)
    assert "gpt2" in str(err.value) and "llama" in str(err.value)


@torch.no_grad()
def test_batch_without_padding_and_padded_batch_error():
    model = tiny_model("llama")
    ids = torch.cat([_ids(seed=1), _ids(seed=2)])
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
        both = model(ids).logits
        one = model(ids[1:]).logits
        assert (both[1:] - one).abs().max().item() <= 1e-5
        mask = torch.ones_like(ids)
        mask[0, :5] = 0
        with pytest.raises(InvalidArgumentError, match="padded batches are not supported"):
            model(ids, attention_mask=mask)


@torch.no_grad()
def test_patch_works_on_an_accelerate_dispatched_model(tmp_path):
    """A model loaded with device_map (accelerate hooks on every module) patches like any other."""
    import transformers as tf

    from lminf_diag.models.loader import load_model

    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=__import__("tokenizers").Tokenizer(
            __import__("tokenizers").models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")
        )
    )
    tok.save_pretrained(tmp_path)
    dispatched, _ = load_model(str(tmp_path), device_map={"model.embed_tokens": "cpu", "model.layers": "cpu",
                                                          "model.norm": "cpu", "model.rotary_emb": "cpu",
                                                          "lm_head": "cpu"})
    ids = _ids()
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
        want = model(ids).logits
    with lm_infinite(dispatched, n_global=N_GLOBAL, n_local=N_LOCAL):
        got = dispatched(ids).logits
    assert (got - want).abs().max().item() <= 1e-5
    assert dispatched.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", ["llama", "bloom", "mpt"])
@torch.no_grad()
def test_through_kernel_computes_the_unpatched_model_and_restores_it(family):
    """`through_kernel`: the plain model's own function (checked against its stock attention), the
    routing undone on exit; a patch applied inside still takes effect."""
    from lminf_diag.patch import through_kernel

    model = tiny_model(family)
    ids = _ids(30)  # within MPT's max_seq_len (32), where its stock attention runs; > n_local
    want = model(ids).logits
    with through_kernel(model):
        got = model(ids).logits
        with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
            patched = model(ids).logits
    assert (got - want).abs().max().item() <= 1e-5
    assert (patched - want).abs().max().item() > 1e-3  # n = 48 > n_local: the patch changes the output
    assert torch.equal(model(ids).logits, want)  # bitwise back
