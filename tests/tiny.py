"""Tiny random-weight models of every supported family, built offline in milliseconds."""

from __future__ import annotations

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lminf_diag.evaluate.passkey import FILLER, INSTRUCTION, NEEDLE, QUESTION

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=32)


def _cfgs():
    gqa = dict(COMMON, num_key_value_heads=2)
    return {
        "llama": lambda: tf.LlamaConfig(**gqa),
        "mistral": lambda: tf.MistralConfig(**gqa, sliding_window=None),
        "qwen2": lambda: tf.Qwen2Config(**gqa),
        "qwen3": lambda: tf.Qwen3Config(**gqa, head_dim=8),
        "gemma": lambda: tf.GemmaConfig(**gqa, head_dim=8),
        "gemma2": lambda: tf.Gemma2Config(**gqa, head_dim=8, sliding_window=12, query_pre_attn_scalar=8),
        "gemma3_text": lambda: tf.Gemma3TextConfig(**gqa, head_dim=8, sliding_window=12, query_pre_attn_scalar=8),
        "phi": lambda: tf.PhiConfig(**COMMON, partial_rotary_factor=0.5),
        "phi3": lambda: tf.Phi3Config(**gqa, partial_rotary_factor=0.5, pad_token_id=0),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**COMMON, rotary_pct=0.5),
        "gptj": lambda: tf.GPTJConfig(vocab_size=128, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=32),
        "starcoder2": lambda: tf.Starcoder2Config(**gqa, sliding_window=None),
        "olmo2": lambda: tf.Olmo2Config(**gqa),
        "mpt": lambda: tf.MptConfig(d_model=32, n_heads=4, n_layers=2, max_seq_len=32, vocab_size=128),
        "bloom": lambda: tf.BloomConfig(vocab_size=128, hidden_size=32, n_layer=2, n_head=4),
    }


FAMILIES = list(_cfgs())
ROPE_FAMILIES = [f for f in FAMILIES if f not in ("mpt", "bloom")]


def tiny_model(family: str, seed: int = 0, dtype=torch.float32):
    """A random-weight causal LM of `family` in eval mode (sdpa attention where available)."""
    torch.manual_seed(seed)
    cfg = _cfgs()[family]()
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    # random init can leave tiny norms / scales; make attention non-trivial but stable
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    return model.eval()


def rope_info(model):
    """(module -> (inv_freq, rotary_dim, interleaved)) from the model's own buffers, for the reference."""
    if model.config.model_type == "gptj":
        rd = model.config.rotary_dim
        inv = 1.0 / (10000 ** (torch.arange(0, rd, 2, dtype=torch.int64) / rd))
        return lambda module: (inv, rd, True)
    rot = [m for n, m in model.named_modules() if n.endswith("rotary_emb")][0]

    def info(module):
        lt = getattr(module, "layer_type", None)
        inv = getattr(rot, f"{lt}_inv_freq", None) if lt else None
        inv = rot.inv_freq if inv is None else inv
        return inv, 2 * inv.shape[0], False

    return info


def extend_gptj_table(model, n: int = 256) -> None:
    """GPT-J's own sinusoid table stops at n_positions; rebuild it longer (test-side formula)."""
    rot = [m for name, m in model.named_modules() if name.endswith("rotary_emb")][0]
    dim = rot.embed_positions.shape[1]
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    ang = torch.arange(n, dtype=torch.int64).float()[:, None] * inv
    rot.embed_positions = torch.cat((torch.sin(ang), torch.cos(ang)), dim=1)


def save_tiny_llama_folder(folder):
    """tiny_model("llama") saved with a WordLevel tokenizer of the 127 commonest words of the default
    book, so the CLI can load it like any model folder. Returns the folder (a Path)."""
    import collections
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lminf_diag.data import default_text, load_text

    text, _ = load_text(default_text())
    vocab = {"[UNK]": 0}
    for word, _ in collections.Counter(re.findall(r"\w+|[^\w\s]", text)).most_common(127):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tiny_model("llama").save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


def small_tokenizer(extra_text: str = "", vocab: int = 128) -> tf.PreTrainedTokenizerFast:
    """A byte-free BPE (Metaspace, one token per digit) trained in memory; fits the tiny models' 128 ids."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<unk>", "<s>"], initial_alphabet=list("0123456789\n.?")
    )
    corpus = [FILLER, INSTRUCTION, NEEDLE.format(key=12345), QUESTION, "0123456789", extra_text]
    backend.train_from_iterator(corpus * 5, trainer)
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<s>", unk_token="<unk>"
    )


def save_tiny_model(folder, extra_text: str = "") -> str:
    """A tiny llama and the small tokenizer saved as a model folder that `load_model` reads."""
    tiny_model("llama").save_pretrained(folder)
    small_tokenizer(extra_text).save_pretrained(folder)
    return str(folder)
