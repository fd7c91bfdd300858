"""The "top-k middle tokens" variant (top_k > 0) against an independent dense float64 reference.

The last query row of each forward, in layers >= top_k_from_layer, also attends per query head to
its top_k best "middle" keys (beyond the window, not far keys), all scored at distance
top_k_distance; every other row is the plain patch, bitwise.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DynamicCache

from lminf_diag.attention.kernel import attend
from lminf_diag.attention.rotary import RotaryOps
from lminf_diag.attention.spec import LambdaSpec
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.patch import current_spec, lm_infinite, patch
from lminf_diag.patch.cache import LambdaLayer

from . import reference
from .test_patch import N_GLOBAL, N_LOCAL, N, _ids
from .test_patch import _reference_logits as _patch_reference
from .tiny import extend_gptj_table, tiny_model

TOP_K = 3
MODES = ["lambda", "mask_only", "window"]


def _reference_logits(model, ids, mode, limit, top_k, top_k_from, distance):
    return _patch_reference(model, ids, mode, limit, top_k=top_k, top_k_from=top_k_from, top_k_distance=distance)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gptj"])
@torch.no_grad()
def test_top_k_logits_match_dense_reference(family):
    """llama (grouped-query heads), gpt_neox (partial rotary), gptj (interleaved rotary)."""
    model = tiny_model(family)
    if family == "gptj":
        extend_gptj_table(model)
    ids = _ids()
    for mode in MODES:
        for limit in (N_LOCAL, N_LOCAL - 1):
            for top_from, distance in ((0, None), (1, 5)):
                want = _reference_logits(model, ids, mode, limit, TOP_K, top_from,
                                         N_LOCAL // 2 if distance is None else distance)
                kw = dict(n_global=N_GLOBAL, n_local=N_LOCAL, limit=limit, mode=mode)
                with lm_infinite(model, **kw, top_k=TOP_K, top_k_from_layer=top_from, top_k_distance=distance):
                    got = model(ids).logits
                with lm_infinite(model, **kw):
                    plain = model(ids).logits
                err = (got - want).abs().max().item()
                assert err <= 1e-5, f"{family} {mode} limit={limit} from={top_from}: max abs error {err:.2e}"
                assert (got[:, -1] - plain[:, -1]).abs().max().item() > 1e-3  # the middle keys matter
                assert torch.equal(got[:, :-1], plain[:, :-1])  # rows other than the last: unchanged


def _alibi_parts(family, model, attn, x):
    if family == "mpt":
        from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

        q, k, v = (t.reshape(1, N, 4, 8).transpose(1, 2) for t in attn.Wqkv(x).chunk(3, dim=2))
        tab = build_mpt_alibi_tensor(4, 2, model.config.attn_config.alibi_bias_max)
        return q, k, v, tab[:, 0, 1] - tab[:, 0, 0], attn.softmax_scale, attn.out_proj
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    q, k, v = attn._reshape(attn.query_key_value(x))
    return q, k, v, _get_alibi_slopes(4, x.device), attn.inv_norm_factor, attn.dense


@pytest.mark.parametrize("family", ["mpt", "bloom"])
@torch.no_grad()
def test_alibi_top_k_matches_dense_reference(family):
    """Every layer's replaced ALiBi forward against the dense reference; layer 0 < top_k_from_layer = 1."""
    model = tiny_model(family)
    mods = [m for m in model.modules() if type(m).__name__ in ("MptAttention", "BloomAttention")]
    seen: dict = {}
    hooks = []
    for i, attn in enumerate(mods):
        def grab_in(mod, args, kwargs, i=i):
            seen[i] = {"x": args[0], "residual": args[1] if family == "bloom" else 0}

        def grab_out(mod, args, kwargs, out, i=i):
            seen[i]["out"] = out[0]

        hooks += [attn.register_forward_pre_hook(grab_in, with_kwargs=True),
                  attn.register_forward_hook(grab_out, with_kwargs=True)]
    ids = _ids()
    try:
        for mode in MODES:
            for limit in (N_LOCAL, N_LOCAL - 1):
                with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, limit=limit, mode=mode, top_k=TOP_K,
                                 top_k_from_layer=1, top_k_distance=6):
                    model(ids)
                for i, attn in enumerate(mods):
                    q, k, v, slopes, scale, proj = _alibi_parts(family, model, attn, seen[i]["x"])
                    ctx = reference.alibi_reference(q, k, v, slopes, scale, mode, N_LOCAL, N_GLOBAL, limit,
                                                    top_k=TOP_K if i >= 1 else 0, top_k_distance=6)
                    want = proj(ctx.reshape(1, N, -1).float()) + seen[i]["residual"]
                    err = (seen[i]["out"] - want).abs().max().item()
                    assert err <= 1e-5, f"{family} {mode} limit={limit} layer {i}: {err:.2e}"
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("family", ["llama", "mpt"])
@torch.no_grad()
def test_top_k_zero_and_late_first_layer_are_bitwise_the_plain_patch(family):
    model = tiny_model(family)
    ids = _ids()
    for mode in ("lambda", "window", "cap_only"):
        kw = dict(n_global=N_GLOBAL, n_local=N_LOCAL, mode=mode)
        with lm_infinite(model, **kw):
            plain = model(ids).logits
        with lm_infinite(model, **kw, top_k=0, top_k_distance=3):
            assert torch.equal(model(ids).logits, plain)
        with lm_infinite(model, **kw, top_k=TOP_K, top_k_from_layer=2):  # the tiny models have 2 layers
            assert torch.equal(model(ids).logits, plain)
        if mode == "cap_only":  # every key is attended already: no middle, no effect
            with lm_infinite(model, **kw, top_k=TOP_K, top_k_from_layer=0):
                assert torch.equal(model(ids).logits, plain)


@torch.no_grad()
def test_layers_below_top_k_from_layer_are_unaffected():
    model = tiny_model("llama")
    outs: dict = {}
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o[0]))
             for i, layer in enumerate(model.model.layers)]
    ids = _ids()
    try:
        with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
            model(ids)
        plain = dict(outs)
        with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, top_k=TOP_K, top_k_from_layer=1):
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(outs[0], plain[0])
    assert torch.equal(outs[1][:, :-1], plain[1][:, :-1]) and not torch.equal(outs[1][:, -1], plain[1][:, -1])


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gptj", "mpt", "bloom"])
@torch.no_grad()
def test_cached_generation_equals_recomputation_without_cache(family):
    model = tiny_model(family)
    prompt, steps = _ids(20), 30  # far past n_global + n_local = 19
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, top_k=TOP_K, top_k_from_layer=1):
        out = model.generate(prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
        seq = out.sequences
        assert seq.shape[1] == 20 + steps
        for t in range(steps):
            want = model(seq[:, : 20 + t], use_cache=False).logits[0, -1]
            assert (out.logits[t][0] - want).abs().max().item() <= 1e-4, f"{family} step {t}"
            assert int(want.argmax()) == int(seq[0, 20 + t])


@torch.no_grad()
def test_kv_cache_is_not_bounded_with_top_k():
    model = tiny_model("llama")
    ids = _ids(40)
    bounded, full = DynamicCache(), DynamicCache()
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL):
        model(ids, past_key_values=bounded, use_cache=True)
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, top_k=TOP_K):
        model(ids, past_key_values=full, use_cache=True)
    assert isinstance(bounded.layers[0], LambdaLayer) and bounded.layers[0].keys.shape[2] == N_GLOBAL + N_LOCAL
    assert not isinstance(full.layers[0], LambdaLayer) and full.layers[0].keys.shape[2] == 40


def _dense_last_row(q, k, v, q_pos, k_pos, inv_freq, scale, plan_mode, top_k, distance, softcap=None):
    """float64 reference of one last row with sparse key positions: q (B,H,1,D), k/v (B,Hkv,Nk,D) rotated."""
    g = q.shape[1] // k.shape[1]
    q, k, v = q.double(), k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    rd = 2 * inv_freq.shape[0]
    q_raw = reference._rot(q, torch.tensor([q_pos]), inv_freq, rd, False, inverse=True)
    k_raw = reference._rot(k, k_pos, inv_freq, rd, False, inverse=True)
    d = (q_pos - k_pos)[None, :]
    local = (d >= 0) & (d < N_LOCAL)
    far = (d >= N_LOCAL) & (k_pos[None, :] < (0 if plan_mode == "window" else N_GLOBAL))

    def scored(x):
        x = x * scale
        return torch.tanh(x / softcap) * softcap if softcap else x

    at = lambda p: reference._rot(q_raw, torch.tensor([p]), inv_freq, rd, False) @ k_raw.transpose(-1, -2)  # noqa: E731
    s_true = scored(q @ k.transpose(-1, -2))
    s = torch.where(far, scored(at(N_LOCAL)) if plan_mode == "lambda" else s_true, s_true)
    s = s.masked_fill(~(local | far), float("-inf"))
    s = reference.top_k_last_row(s, scored(at(distance)), (d >= N_LOCAL) & ~far, top_k)
    return (torch.softmax(s, -1) @ v).transpose(1, 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("softcap", [None, 5.0])
@torch.no_grad()
def test_kernel_last_row_with_sparse_keys_and_a_chunk(mode, softcap):
    """`attend` on a 3-row chunk over sparse key positions (B=2, 4 query heads on 2 key heads)."""
    gen = torch.Generator().manual_seed(7)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 8, 2) / 8))
    rope = RotaryOps.from_inv_freq(inv_freq)
    k_pos = torch.cat([torch.arange(0, 30), torch.arange(33, 60, 3), torch.arange(61, 80)])
    q_pos = k_pos[-3:]
    q = torch.randn(2, 4, 3, 8, generator=gen)
    k, v = torch.randn(2, 2, k_pos.shape[0], 8, generator=gen), torch.randn(2, 2, k_pos.shape[0], 8, generator=gen)
    q = reference._rot(q.double(), q_pos, inv_freq, 8, False).float()
    k = reference._rot(k.double(), k_pos, inv_freq, 8, False).float()
    spec = LambdaSpec.resolve(N_LOCAL, n_global=N_GLOBAL, mode=mode, top_k=4, top_k_from_layer=0, top_k_distance=7)
    kw = dict(scaling=0.4, q_pos=q_pos, k_pos=k_pos, rope=rope, softcap=softcap)
    got = attend(q, k, v, spec.plan(layer=0), **kw)
    plain = attend(q, k, v, spec.plan(layer=None), **kw)
    assert torch.equal(got[:, :-1], plain[:, :-1])
    want = _dense_last_row(q[:, :, -1:], k, v, int(q_pos[-1]), k_pos, inv_freq, 0.4, mode, 4, 7, softcap)
    assert (got[:, -1:] - want).abs().max().item() <= 1e-5
    one = attend(q[:, :, -1:], k, v, spec.plan(layer=0), **{**kw, "q_pos": q_pos[-1:]})  # a decoding step
    assert (one - want).abs().max().item() <= 1e-5


@torch.no_grad()
def test_capture_with_top_k_is_refused_clearly():
    from lminf_diag import record

    model = tiny_model("llama")
    ids = _ids()
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, top_k=TOP_K, top_k_from_layer=0):
        with pytest.raises(InvalidArgumentError, match="top-k middle-token variant"):
            with record(model):
                model(ids)
    with lm_infinite(model, n_global=N_GLOBAL, n_local=N_LOCAL, top_k=TOP_K, top_k_from_layer=1):
        with record(model, layers=[0]) as rec:  # layers below top_k_from_layer can be captured
            model(ids)
    assert rec.trace.entropy.shape[0] == 1
    assert model.config._attn_implementation == "sdpa" and current_spec(model) is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(top_k=2.5), "top_k must be an integer >= 0"),
        (dict(top_k=2, top_k_from_layer=-1), "top_k_from_layer must be >= 0"),
        (dict(top_k=2, top_k_distance=-3), "top_k_distance must be >= 0"),
        (dict(top_k=True), "top_k must be an integer"),
    ],
)
def test_invalid_top_k_arguments_are_explained(kwargs, words):
    model = tiny_model("llama")
    with pytest.raises(InvalidArgumentError, match=words):
        patch(model, **kwargs)
    assert model.config._attn_implementation == "sdpa"


def test_spec_plans_per_layer():
    spec = LambdaSpec.resolve(4096, n_global=10, top_k=5)
    assert (spec.top_k_distance, spec.top_k_from_layer) == (2048, 4)
    assert spec.plan(3).top_k == 0 and spec.plan(None).top_k == 0
    assert (spec.plan(4).top_k, spec.plan(4).top_k_distance) == (5, 2048)
    assert LambdaSpec.resolve(4096, mode="cap_only", top_k=5).plan(9).top_k == 0
    assert LambdaSpec(10, 4096, 4096).top_k_distance == 2048  # constructed directly: default resolved


def test_display_name_of_the_top_k_run():
    from lminf_diag.report import display_name

    assert display_name("lambda+top5") == "LM-Infinite + top-5 middle tokens"
    assert display_name("run-a:lambda+top2") == "LM-Infinite + top-2 middle tokens (run-a)"
    assert display_name("lambda+topx") == "lambda+topx"


def test_cli_passkey_top_k_adds_a_run_and_resumes(tmp_path, capsys):
    from lminf_diag.cli.main import main

    from .tiny import save_tiny_llama_folder

    model = str(save_tiny_llama_folder(tmp_path / "model"))
    out = tmp_path / "run"
    args = ["passkey", "--model", model, "--lengths", "120", "--depths", "0.5", "--trials", "1", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    top = [*args, "--top-k", "2", "--top-k-from-layer", "1", "--top-k-distance", "6"]
    assert main(top) == 0  # added to the finished run: only the new run is computed
    captured = capsys.readouterr()
    assert captured.err.count("saved in the run folder, skipped") == 2
    assert "lambda+top2" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    beyond = [k for k in summary["key_figures"] if k["figure"] == "passkey accuracy beyond T"]
    assert [k["label"] for k in beyond] == ["baseline", "lambda", "lambda+top2"] and beyond[-1]["n"] == 1
    assert (out / "passkey" / "lambda_top2_120.json").is_file()
    assert "LM-Infinite + top-2 middle tokens" in (out / "passkey.html").read_text()
    assert main([*top, "--json"]) == 0  # resumed: nothing recomputed
    assert capsys.readouterr().err.count("saved in the run folder, skipped") == 3
    assert main(["passkey", "--top-k", "-1"]) == 2
    assert "--top-k" in capsys.readouterr().err
    assert main(["passkey", "--help"]) == 0 and "--top-k-from-layer" in capsys.readouterr().out
    assert main(["report", "--help"]) == 0 and "--passkey-top-k" in capsys.readouterr().out
