"""A model split with accelerate's ``device_map`` (some layers offloaded to disk, moved in by hooks
for each forward) is patched and captured exactly as the same model in one piece."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lminf_diag.capture.compare import compare

from .tiny import tiny_model

pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def split_pair(tmp_path_factory):
    """(whole model, the same weights loaded with a split device map: layer 1 and the head on disk)."""
    import transformers as tf

    folder = tmp_path_factory.mktemp("tiny-llama")
    whole = tiny_model("llama", seed=3)
    whole.save_pretrained(folder)
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}
    split = tf.AutoModelForCausalLM.from_pretrained(
        folder, device_map=device_map, offload_folder=str(folder / "offload"), dtype=torch.float32
    ).eval()
    assert getattr(split, "hf_device_map", {}).get("model.layers.1") == "disk"  # really split
    return whole, split


@torch.no_grad()
def test_split_model_under_the_patch_matches_the_whole_model(split_pair):
    from lminf_diag.patch import lm_infinite

    whole, split = split_pair
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    for model in (whole, split):
        model.config.max_position_embeddings = 16  # training length 16: the patch changes the output
    with lm_infinite(whole, n_global=2, n_local=8):
        want = whole(ids).logits
    with lm_infinite(split, n_global=2, n_local=8):
        got = split(ids).logits
    assert (got - want).abs().max().item() < 1e-5
    assert (whole(ids).logits - want).abs().max().item() > 1e-3  # the patch mattered
    assert (split(ids).logits - whole(ids).logits).abs().max().item() < 1e-5  # and was removed


def test_split_model_capture_equals_the_whole_model_capture(split_pair):
    whole, split = split_pair
    ids = torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(1))
    a = compare(whole, input_ids=ids, modes=("lambda",), n_global=2, n_local=8, stride=1, train_len=16)
    b = compare(split, input_ids=ids, modes=("lambda",), n_global=2, n_local=8, stride=1, train_len=16)
    assert a.labels == b.labels
    for label in a.labels:
        ta, tb = a.traces[label], b.traces[label]
        for field in ("entropy", "max_logit", "lse", "nll"):
            x, y = getattr(ta, field), getattr(tb, field)
            assert x.shape == y.shape and x.size > 0, (label, field)
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=f"{label} {field}")
