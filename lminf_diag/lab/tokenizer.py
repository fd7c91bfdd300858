"""A byte-level tokenizer for the lab models: token id = byte value, plus one special token.

Every UTF-8 text round-trips exactly, the vocabulary has 257 entries, and the tokenizer is an
ordinary ``PreTrainedTokenizerFast`` saved as ``tokenizer.json``, so ``AutoTokenizer`` loads it
like any other model's. The special token ``<|endoftext|>`` (id 256) separates documents and
begins every sequence: like Llama 2's tokenizer, encoding puts it first unless
``add_special_tokens=False``.

Example:
    >>> tok = byte_tokenizer()
    >>> tok("Hi!", add_special_tokens=False)["input_ids"], tok("Hi!")["input_ids"]
    ([72, 105, 33], [256, 72, 105, 33])
    >>> tok.decode([72, 105, 33]), len(tok)
    ('Hi!', 257)
"""

from __future__ import annotations

from typing import Any

EOT = "<|endoftext|>"
N_BYTES = 256
VOCAB_SIZE = N_BYTES + 1  # bytes 0..255, then the end-of-text token (id 256)


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(N_BYTES):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(N_BYTES + extra)
            extra += 1
    return chars


def byte_tokenizer() -> Any:
    """A fresh byte-level ``PreTrainedTokenizerFast`` (ids 0..255 are bytes, 256 is ``<|endoftext|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in byte_to_unicode().items()}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOT])
    # like Llama 2's tokenizer: the begin-of-text token first, unless add_special_tokens=False
    core.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, N_BYTES)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOT, bos_token=EOT, pad_token=EOT, model_max_length=10**9
    )


def encode_bytes(text: str) -> list[int]:
    """The token ids of `text` without building a tokenizer (its UTF-8 bytes).

    >>> encode_bytes("é")
    [195, 169]
    """
    return list(text.encode("utf-8"))
