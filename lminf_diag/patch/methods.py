"""`method`: run any long-context method (LM-Infinite, StreamingLLM, RoPE scaling) through the kernel.

Every method is a `MethodSpec` (`method_spec.py`): the kernel plan it installs on the router
(the same kernel as the baseline and LM-Infinite, so captures give the same `Trace`) and the
RoPE scaling it applies to the model (`rope_scaling.py`). Leaving the context restores the
router's previous plan and the model's rotary modules and config, bitwise, also on error.

Example:
    >>> import lminf_diag as ld
    >>> model, tok = ld.load_model("smollm2-135m")                             # doctest: +SKIP
    >>> with ld.method(model, "streaming", n_global=4):                        # doctest: +SKIP
    ...     out = model.generate(ids, max_new_tokens=20)   # bounded cache: sinks + recent tokens
    >>> with ld.method(model, "lambda+yarn", target_len=16384) as spec:        # doctest: +SKIP
    ...     logits = model(ids).logits                     # spec.rope.factor == 2.0
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from ..attention.method_spec import MethodSpec, as_method
from ..attention.spec import LambdaSpec
from .rope_scaling import apply_rope_scaling, refusal
from .router import install, rebind_rotary, release_if_idle, router_of

if TYPE_CHECKING:
    from torch import nn

_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> [MethodSpec], innermost last


def resolve_method(model: nn.Module, name: str | MethodSpec | LambdaSpec = "lambda", *, train_len: int | None = None,
                   **settings: Any) -> MethodSpec:
    """The `MethodSpec` of `name` for `model` (training length read from the model unless given),
    checked against the model's family: a method that cannot apply is refused with the reason."""
    if isinstance(name, (MethodSpec, LambdaSpec)):
        if settings:
            raise TypeError("settings go with a method name, not with a resolved spec")
        spec = as_method(name)
    else:
        if train_len is None:
            from ..models.info import model_info

            train_len = model_info(model).train_len
        spec = MethodSpec.resolve(name, train_len, **settings)
    if spec.rope is not None:
        why = refusal(model, spec.name)
        if why:
            from ..errors import UnsupportedModelError

            raise UnsupportedModelError(why)
    return spec


def apply_method(model: nn.Module, spec: MethodSpec) -> Callable[[], None]:
    """Apply `spec` to `model` in place; returns the function that undoes it exactly."""
    undo_rope = apply_rope_scaling(model, spec.rope, spec.name) if spec.rope is not None else None
    router = router_of(model)
    previous = None if router is None else router.spec
    try:
        if spec.attention is not None or router is not None:
            router = install(model)
            router.spec = spec.attention
        rebind_rotary(model)
    except BaseException:
        if undo_rope is not None:
            undo_rope.restore()
        rebind_rotary(model)
        release_if_idle(model)
        raise
    _ACTIVE.setdefault(model, []).append(spec)

    def undo() -> None:
        try:
            current = router_of(model)
            if current is not None:
                current.spec = previous
            if undo_rope is not None:
                undo_rope.restore()
            rebind_rotary(model)
        finally:
            stack = _ACTIVE.get(model, [])
            if stack and stack[-1] is spec:
                stack.pop()
            release_if_idle(model)

    return undo


def current_method(model: nn.Module) -> MethodSpec | None:
    """The innermost active method of `model` (an `lm_infinite` patch counts as its method), or None."""
    stack = _ACTIVE.get(model)
    if stack:
        return stack[-1]
    router = router_of(model)
    return None if router is None or router.spec is None else MethodSpec.from_lambda(router.spec)


@contextmanager
def method(model: nn.Module, name: str | MethodSpec | LambdaSpec = "lambda", *, train_len: int | None = None,
           **settings: Any) -> Iterator[MethodSpec]:
    """Run `model` under the long-context method `name` inside the block; yields its `MethodSpec`.

    Names (see `method_spec.METHOD_HELP`): "lambda" (LM-Infinite; `lm_infinite` is its shorthand),
    "mask_only", "cap_only", "window", "topk", "streaming" (StreamingLLM), "linear", "dynamic",
    "yarn", "llama3" (RoPE scaling), and "<attention>+<rope>" such as "lambda+dynamic".
    Settings: n_global, n_local, limit, top_k, top_k_from_layer, top_k_distance (attention);
    factor or target_len (RoPE scaling: factor = target_len / training length). A fresh KV cache
    is bounded as under `lm_infinite` (streaming: the sinks and the n_local most recent tokens).

    Example:
        >>> with method(model, "dynamic", target_len=32768) as spec:   # doctest: +SKIP
        ...     nll = ld.token_nll(model, ids)
    """
    spec = resolve_method(model, name, train_len=train_len, **settings)
    undo = apply_method(model, spec)
    try:
        yield spec
    finally:
        undo()


def applied(model: nn.Module, name: str, *, target_len: int | None = None, train_len: int | None = None,
            **settings: Any) -> AbstractContextManager[MethodSpec | None]:
    """The context of run label `name` with the shared run settings it takes (the others ignored).

    One set of settings (n_global, n_local, limit, ...) serves every run of an evaluation; each
    method takes the ones it has (RoPE scaling takes no n_global; streaming no limit). "baseline"
    applies nothing. A RoPE scaling without a factor is scaled to `target_len` (the run's length).

    Example:
        >>> with applied(model, "dynamic", target_len=16384, n_global=10):   # doctest: +SKIP
        ...     nll = ld.token_nll(model, ids)
    """
    from contextlib import nullcontext

    from ..attention.method_spec import ATTENTION_SETTINGS, ROPE_SETTINGS, split_name

    attn, rope = split_name(name)
    if attn is None and rope is None:
        return nullcontext(None)
    allowed = set(ATTENTION_SETTINGS if attn else ()) | set(ROPE_SETTINGS if rope else ())
    if attn == "streaming":
        allowed -= {"limit", "top_k", "top_k_from_layer", "top_k_distance"}
    if attn not in ("lambda", "topk"):
        allowed -= {"top_k", "top_k_from_layer", "top_k_distance"}
    kept = {k: v for k, v in settings.items() if k in allowed and v is not None}
    if rope and "factor" not in kept and "target_len" not in kept and target_len:
        kept["target_len"] = int(target_len)
    return method(model, name, train_len=train_len, **kept)
