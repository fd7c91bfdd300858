"""`lm_infinite` (context manager), `patch` and `unpatch`: LM-Infinite on any supported model."""

from __future__ import annotations

from contextlib import contextmanager

from ..attention.spec import LambdaSpec
from .router import install, release_if_idle, router_of


def _resolve(model, n_global, n_local, limit, mode, train_len) -> LambdaSpec:
    if train_len is None and n_local is None:
        from ..models.info import model_info

        train_len = model_info(model).train_len
    return LambdaSpec.resolve(train_len or n_local, n_global=n_global, n_local=n_local, limit=limit, mode=mode)


def patch(model, n_global: int = 10, n_local: int | None = None, limit: int | None = None, mode: str = "lambda",
          *, train_len: int | None = None) -> LambdaSpec:
    """Apply LM-Infinite to `model` in place until `unpatch(model)`; returns the resolved settings.

    n_local=None means the model's training length; limit=None means n_local. `mode` is one of
    "lambda" (the method), "mask_only", "cap_only", "window" (ablations).

    Example:
        >>> model, tok = load_model("smollm2-135m")            # doctest: +SKIP
        >>> patch(model, n_global=10)                          # doctest: +SKIP
        LambdaSpec(n_global=10, n_local=8192, limit=8192, mode='lambda')
        >>> unpatch(model)                                     # doctest: +SKIP
    """
    spec = _resolve(model, n_global, n_local, limit, mode, train_len)
    router = install(model)
    router.spec = spec
    return spec


def unpatch(model) -> None:
    """Remove the patch; the model computes bitwise what it computed before."""
    router = router_of(model)
    if router is not None:
        router.spec = None
        release_if_idle(model)


def current_spec(model) -> LambdaSpec | None:
    """The active patch settings of `model`, or None."""
    router = router_of(model)
    return None if router is None else router.spec


@contextmanager
def lm_infinite(model, n_global: int = 10, n_local: int | None = None, limit: int | None = None,
                mode: str = "lambda", *, train_len: int | None = None):
    """Context manager form of `patch`; the previous state comes back on exit, also on error.

    Example:
        >>> with lm_infinite(model, n_global=10) as spec:     # doctest: +SKIP
        ...     out = model.generate(ids, max_new_tokens=20)
    """
    spec = _resolve(model, n_global, n_local, limit, mode, train_len)
    previous = current_spec(model)
    router = install(model)
    router.spec = spec
    try:
        yield spec
    finally:
        router.spec = previous
        release_if_idle(model)
