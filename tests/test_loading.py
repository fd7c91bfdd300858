"""Hugging Face-native loading: from_pretrained arguments, hub errors offline, unlisted families.

No network: models are tiny random ones saved with save_pretrained into tmp_path, and hub ids are
tried only with HF_HUB_OFFLINE=1 and an empty HF_HOME.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import lminf_diag as ld
from lminf_diag.errors import InvalidArgumentError, ModelNotFoundError, UnsupportedModelError
from lminf_diag.models import families, loader, model_info

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, vocab_size=64, max_position_embeddings=16)


def _tokenizer(max_length: int = 16) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   unk_token="[UNK]", model_max_length=max_length)


def _save(model, folder):
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


class RenamedLlamaConfig(LlamaConfig):
    """A Llama under a model_type lminf_diag does not list (as a custom or newer architecture would be)."""

    model_type = "renamed_llama_for_tests"


class RenamedLlamaForCausalLM(LlamaForCausalLM):
    config_class = RenamedLlamaConfig


AutoConfig.register(RenamedLlamaConfig.model_type, RenamedLlamaConfig)
AutoModelForCausalLM.register(RenamedLlamaConfig, RenamedLlamaForCausalLM)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # set after import: load_model reads it per call


def test_no_hand_made_network_probe():
    assert not hasattr(loader, "hub_reachable")
    assert "socket" not in vars(loader)


def test_hub_id_offline_is_one_clear_line(offline_hub):
    with pytest.raises(ModelNotFoundError) as err:
        ld.load_model("some-org/not-in-any-cache")
    message = str(err.value)
    assert "'some-org/not-in-any-cache'" in message and "HF_HUB_OFFLINE" in message
    assert "local model folder" in message and "\n" not in message


def test_single_word_ids_go_to_from_pretrained(offline_hub):
    """`gpt2` is a hub id like any other: offline and uncached it fails with the hub error."""
    with pytest.raises(ModelNotFoundError, match="Cannot load 'gpt2' from the Hugging Face hub"):
        ld.load_model("gpt2")


def test_gpt2_folder_is_refused_with_its_reason(tmp_path):
    config = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=64, n_positions=16)
    folder = _save(transformers.GPT2LMHeadModel(config), tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="absolute position embeddings.*relative positions"):
        ld.load_model(folder)


def test_revision_token_and_device_map_reach_from_pretrained(monkeypatch, tmp_path):
    """A hub id's revision and token, and device_map, are passed to every from_pretrained call."""
    folder = _save(LlamaForCausalLM(LlamaConfig(**SMALL)), tmp_path / "llama")
    calls: list = []

    def redirect(cls):
        original = cls.from_pretrained

        def fake(location, *args, **kwargs):
            calls.append((cls.__name__, location, dict(kwargs)))
            return original(str(folder), *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", fake)

    for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        redirect(cls)
    model, _ = ld.load_model("org/tiny", revision="v1.0", token="hf_secret", device_map="cpu")
    ours = [(name, kwargs) for name, location, kwargs in calls if location == "org/tiny"]  # not nested calls
    assert {name for name, _ in ours} == {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}
    for _, kwargs in ours:
        assert kwargs["revision"] == "v1.0" and kwargs["token"] == "hf_secret"
    model_kwargs = next(kw for name, kw in ours if name == "AutoModelForCausalLM")
    assert model_kwargs["device_map"] == "cpu"
    assert next(model.parameters()).device.type == "cpu"


def test_unlisted_family_refused_then_assumed(tmp_path):
    folder = _save(RenamedLlamaForCausalLM(RenamedLlamaConfig(**SMALL)), tmp_path / "renamed")
    with pytest.raises(UnsupportedModelError, match="assume-family"):
        ld.load_model(folder)
    try:
        with pytest.warns(UserWarning, match="unchecked"):
            model, _ = ld.load_model(folder, assume_family="llama")
        info = model_info(model)
        assert (info.model_type, info.position, info.train_len) == ("renamed_llama_for_tests", "rope", 16)
        # the patch works on it exactly as on the same weights loaded as a plain Llama
        plain = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        ids = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), ld.lm_infinite(model, n_global=2), ld.lm_infinite(plain, n_global=2):
            torch.testing.assert_close(model(ids).logits, plain(ids).logits)
    finally:
        families.unregister_family(RenamedLlamaConfig.model_type)


def test_register_family_checks_fields_and_warns():
    with pytest.raises(InvalidArgumentError, match="relative positions"):
        ld.register_family("x_abs", "absolute")
    with pytest.raises(InvalidArgumentError, match="already listed"):
        ld.register_family("llama", "rope")
    with pytest.raises(InvalidArgumentError, match="not a supported listed family"):
        families.alias_family("x_new", "gpt2")
    try:
        with pytest.warns(UserWarning, match="unchecked"):
            spec = ld.register_family("x_rope", "rope", note="mine")
        assert families.family_of("x_rope") is spec
        assert "x_rope" in [f.model_type for f in families.supported_families()]
    finally:
        families.unregister_family("x_rope")
    assert families.find_family("x_rope") is None


def test_length_reminders_are_silenced_and_nothing_else(tmp_path):
    folder = _save(LlamaForCausalLM(LlamaConfig(**SMALL)), tmp_path / "llama")
    _, tok = ld.load_model(folder)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    log = logging.getLogger("transformers.tokenization_utils_base")
    handler = Keep()
    log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids = tok(" ".join(["a"] * 40))["input_ids"]
        log.warning("another message")
    finally:
        log.removeHandler(handler)
    assert len(ids) == 40 > tok.model_max_length
    assert seen == ["another message"]
