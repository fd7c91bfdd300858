"""`lm_infinite` (context manager), `patch` and `unpatch`: LM-Infinite on any supported model."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..attention.method_spec import DEFAULTS, MethodSpec
from ..attention.spec import LambdaSpec
from ..errors import InvalidArgumentError
from .methods import apply_method, resolve_method
from .router import install, release_if_idle, router_of

if TYPE_CHECKING:
    from torch import nn

_PATCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> undo of patch(method=...)


def _resolve(model, n_global, n_local, limit, mode, train_len, top_k) -> LambdaSpec:
    if train_len is None and n_local is None:
        from ..models.info import model_info

        train_len = model_info(model).train_len
    n_global = DEFAULTS["n_global"] if n_global is None else n_global
    return LambdaSpec.resolve(train_len or n_local, n_global=n_global, n_local=n_local, limit=limit,
                              mode=mode, **top_k)


def _patch_method(model, method, mode, train_len, settings) -> MethodSpec:
    if mode != "lambda":
        raise InvalidArgumentError(f"give either mode= ({mode!r}) or method= ({method!r}), not both.")
    spec = resolve_method(model, method, train_len=train_len, **settings)
    unpatch(model)
    _PATCHED[model] = apply_method(model, spec)
    return spec


def patch(model: nn.Module, n_global: int | None = None, n_local: int | None = None, limit: int | None = None,
          mode: str = "lambda", *, train_len: int | None = None, top_k: int = 0, top_k_from_layer: int = 4,
          top_k_distance: int | None = None, method: str | MethodSpec | None = None,
          factor: float | None = None, target_len: int | None = None) -> LambdaSpec | MethodSpec:
    """Apply LM-Infinite to `model` in place until `unpatch(model)`; returns the resolved settings.

    n_global=None means 10. With `method=` (a name or a `MethodSpec`, see `lminf_diag.method`)
    any long-context method is applied instead, with the settings given here (n_global, n_local,
    limit, top_k..., factor, target_len; unset ones take the method's defaults), and a
    `MethodSpec` is returned.

    n_local=None means the model's training length; limit=None means n_local. `mode` is one of
    "lambda" (the method), "mask_only", "cap_only", "window" (ablations).

    top_k > 0 turns on the "top-k middle tokens" variant of the LM-Infinite reference code: the
    last query row of each forward (the row that predicts the next token), in layers with index
    >= top_k_from_layer, also attends, per head, to its top_k best-scoring keys among those the
    Λ-shape drops, all seen at distance top_k_distance (None = n_local // 2). Those keys must stay
    available, so the KV cache is then NOT bounded: it grows with the text like an ordinary
    cache (as in the reference code). top_k=0 (default) is the plain method, bitwise.

    Example:
        >>> model, tok = load_model("smollm2-135m")            # doctest: +SKIP
        >>> patch(model, n_global=10)                          # doctest: +SKIP
        LambdaSpec(n_global=10, n_local=8192, limit=8192, mode='lambda', top_k=0, ...)
        >>> unpatch(model)                                     # doctest: +SKIP
        >>> patch(model, top_k=5).top_k_distance               # doctest: +SKIP
        4096
        >>> patch(model, method="streaming", n_global=4).name  # doctest: +SKIP
        'streaming'
    """
    if method is not None:
        settings = dict(n_global=n_global, n_local=n_local, limit=limit, top_k=top_k or None,
                        top_k_from_layer=None if top_k_from_layer == 4 else top_k_from_layer,
                        top_k_distance=top_k_distance, factor=factor, target_len=target_len)
        if isinstance(method, MethodSpec):
            settings = {}
        return _patch_method(model, method, mode, train_len, {k: v for k, v in settings.items() if v is not None})
    if factor is not None or target_len is not None:
        raise InvalidArgumentError("factor and target_len go with a RoPE scaling method: pass method='yarn' etc.")
    if model in _PATCHED:  # a method applied by patch(method=...) makes way
        _PATCHED.pop(model)()
    spec = _resolve(model, n_global, n_local, limit, mode, train_len,
                    dict(top_k=top_k, top_k_from_layer=top_k_from_layer, top_k_distance=top_k_distance))
    router = install(model)
    router.spec = spec
    return spec


def unpatch(model: nn.Module) -> None:
    """Remove the patch (or the method of `patch(method=...)`); the model computes bitwise what it
    computed before."""
    undo = _PATCHED.pop(model, None)
    if undo is not None:
        undo()
    router = router_of(model)
    if router is not None:
        router.spec = None
        release_if_idle(model)


def current_spec(model: nn.Module) -> LambdaSpec | None:
    """The active patch settings of `model`, or None."""
    router = router_of(model)
    return None if router is None else router.spec


@contextmanager
def lm_infinite(model: nn.Module, n_global: int | None = None, n_local: int | None = None, limit: int | None = None,
                mode: str = "lambda", *, train_len: int | None = None, top_k: int = 0,
                top_k_from_layer: int = 4, top_k_distance: int | None = None) -> Iterator[LambdaSpec]:
    """Context manager form of `patch` (the method "lambda" of `lminf_diag.method`, whose
    shorthand it is; n_global=None means 10); the previous state comes back on exit, also on error.

    With top_k > 0 (the "top-k middle tokens" variant, see `patch`) the KV cache is not bounded.

    Example:
        >>> with lm_infinite(model, n_global=10) as spec:     # doctest: +SKIP
        ...     out = model.generate(ids, max_new_tokens=20)
        >>> with lm_infinite(model, top_k=5, top_k_from_layer=4):          # doctest: +SKIP
        ...     out = model.generate(ids, max_new_tokens=8)   # passkey-style retrieval
    """
    spec = _resolve(model, n_global, n_local, limit, mode, train_len,
                    dict(top_k=top_k, top_k_from_layer=top_k_from_layer, top_k_distance=top_k_distance))
    previous = current_spec(model)
    router = install(model)
    router.spec = spec
    try:
        yield spec
    finally:
        router.spec = previous
        release_if_idle(model)


@contextmanager
def through_kernel(model: nn.Module) -> Iterator[nn.Module]:
    """The unpatched model with its attention computed by the toolkit's kernel (plain causal plan).

    Same function as the model's own attention, but memory-bounded for families whose own
    attention builds an n x n matrix (Bloom and MPT's eager ALiBi attention: 17 GB at 32k tokens).
    A patch applied inside still takes effect; the previous routing comes back on exit.

    Example:
        >>> with through_kernel(model):                        # doctest: +SKIP
        ...     logits = model(ids).logits
    """
    install(model)
    try:
        yield model
    finally:
        release_if_idle(model)
