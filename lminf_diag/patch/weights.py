"""What a routed forward returns besides the output: attention weights and a bounded KV cache.

- ``model(ids, output_attentions=True)`` under the patch returns the Λ attention weights of
  every layer, shape (B, H, Nq, Nk): the kernel itself is run once more with the identity as
  values, so the weights follow exactly the plan of the output (mask, distance cap, rotary
  re-rotation, soft-capping, the top-k variant). That costs Nk value channels, so it is done up
  to `MAX_DENSE_KEYS` keys; longer calls raise a clear error instead of returning nothing.
- ``model(ids, use_cache=True)`` (or the config's default) under the patch gets the bounded cache
  of `cache.py`, as ``generate`` does.

Example:
    >>> import torch
    >>> from lminf_diag.attention.kernel import attend
    >>> from lminf_diag.attention.spec import Plan
    >>> q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)
    >>> w = dense_weights(lambda values: attend(q, k, values, Plan(), scaling=0.5), k)
    >>> w.shape, bool(torch.allclose(w.sum(-1), torch.ones(1, 2, 6)))
    (torch.Size([1, 2, 6, 6]), True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..errors import InvalidArgumentError

MAX_DENSE_KEYS = 4096  # keys per call for which output_attentions builds the dense weights


def dense_weights(run: Callable[[torch.Tensor], torch.Tensor], key: torch.Tensor) -> torch.Tensor:
    """The attention weights (B, H, Nq, Nk) of `run(values) -> (B, Nq, H, Nk)` with identity values.

    `key` (B, Hkv, Nk, D) gives the shapes. Raises `InvalidArgumentError` past `MAX_DENSE_KEYS`.
    """
    b, h_kv, n_k = key.shape[0], key.shape[1], key.shape[2]
    if n_k > MAX_DENSE_KEYS:
        raise InvalidArgumentError(
            f"output_attentions=True under the LM-Infinite patch builds the dense weights, up to "
            f"{MAX_DENSE_KEYS} keys per call; this call has {n_k}. Use lminf_diag.capture for per-row "
            "statistics of long sequences (entropy, max logit, attended mass), or a shorter input."
        )
    eye = torch.eye(n_k, dtype=key.dtype, device=key.device).expand(b, h_kv, n_k, n_k)  # (B, Hkv, Nk, Nk)
    return run(eye).transpose(1, 2)  # (B, Nq, H, Nk) -> (B, H, Nq, Nk)


def check_weights_request(route: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``output_attentions=True`` where the routed forward cannot return weights (ALiBi
    families, whose attention forward is replaced per module)."""
    if kwargs.get("output_attentions") and route == "module":
        raise InvalidArgumentError(
            "output_attentions=True is not available for ALiBi models (MPT, Bloom) under the LM-Infinite "
            "patch or capture; use lminf_diag.capture for attention statistics."
        )


def _cache_name(model: Any) -> str | None:
    """The forward's keyword for the KV cache ("cache" in transformers 5, else "past_key_values")."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def fresh_cache(model: Any, kwargs: dict[str, Any]) -> Any:
    """A new empty `DynamicCache` placed in `kwargs` when the call will build one itself (use_cache
    asked for or the config's default, no cache given); else None. The caller bounds it."""
    if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
        return None
    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        use_cache = bool(getattr(model.config, "use_cache", False))
    name = _cache_name(model)
    if not use_cache or name is None:
        return None
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    kwargs[name] = cache
    return cache
