"""Per-token negative log-likelihood without the full logits tensor.

The base model gives the final (normed) hidden states; the LM head and the log-softmax are
applied chunk by chunk (16k tokens x 49k vocabulary would be 3.2 GB of logits at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lminf_diag.devices import execution_device

if TYPE_CHECKING:
    from transformers import Cache, PreTrainedModel


def token_nll(model: PreTrainedModel, input_ids: torch.Tensor, chunk: int = 1024, *,
              past_key_values: Cache | None = None,
              keep_cache: int | None = None) -> np.ndarray | tuple[np.ndarray, Cache | None]:
    """nll (N,) float32 with nll[0] = NaN and nll[t] = -log p(x_t | x_<t), for batch size 1.

    `past_key_values`: a cache of the tokens before `input_ids` (nll[0] stays NaN: its context is
    in the cache, its logits were the cache's last position's). `keep_cache=P` also returns the
    KV cache of the first P tokens: `(nll, cache)`, or `(nll, None)` when the model's cache cannot
    be cropped (sliding-window layers).

    Example (a tiny random-weight model):
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                   num_attention_heads=2, num_key_value_heads=2)
        >>> nll = token_nll(LlamaForCausalLM(cfg).eval(), torch.arange(10)[None], chunk=4)
        >>> nll.shape, bool(np.isnan(nll[0])), bool(np.isfinite(nll[1:]).all())
        ((10,), True, True)
    """
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    with torch.no_grad():
        kw = {"cache": past_key_values} if past_key_values is not None else {}
        if keep_cache is not None:
            kw["use_cache"] = True
        out = model.base_model(input_ids=input_ids, **kw)
        hidden = out.last_hidden_state[0]  # (N, D)
        ids = input_ids[0].to(hidden.device)
        nll = np.full(ids.shape[0], np.nan, dtype=np.float32)  # nll[0]: no token predicts it
        nll[1:] = rows_nll(head, hidden[:-1], ids[1:], cap, block=chunk)
    if keep_cache is None:
        return nll
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return nll, _cropped(cache, keep_cache)


def rows_nll(head: torch.nn.Module, rows: torch.Tensor, targets: torch.Tensor, softcap: float | None = None,
             block: int = 1024) -> np.ndarray:
    """-log p(target) (R,) float32 for each row (R, D) of final hidden states, through the LM head
    `block` rows at a time (never R x vocabulary logits at once).

    >>> head = torch.nn.Linear(4, 3, bias=False)
    >>> rows, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> ref = torch.nn.functional.cross_entropy(head(rows), targets, reduction="none")
    >>> bool(np.allclose(rows_nll(head, rows, targets, block=2), ref.detach().numpy(), atol=1e-6))
    True
    """
    out = np.empty(rows.shape[0], dtype=np.float32)
    with torch.no_grad():
        for a in range(0, rows.shape[0], block):
            logits = head(rows[a : a + block].to(execution_device(head, rows.device))).float()  # (b, V)
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            tgt = targets[a : a + block, None].to(logits.device)  # log-sum-exp minus the target's logit:
            nll = torch.logsumexp(logits, -1) - logits.gather(-1, tgt)[:, 0]  # no (b, V) log-softmax
            out[a : a + block] = nll.cpu().numpy()
    return out


def _cropped(cache: Any, length: int) -> Cache | None:
    """The cache cut to its first `length` tokens, or None when it cannot be (sliding layers)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.crop(length - cache.get_seq_length())
    return cache
